//! Randomised inputs against the decoders a sender reaches: binary mode (headers and body),
//! structured mode (JSON) and the `Location` parser. No input may panic; what decodes must be
//! storable and read back; every Location must parse back to what made it.
//!
//! Inputs come from a seeded generator: valid seeds, mutated (bytes flipped, tokens that
//! matter to each format inserted, pieces cut and repeated) or built from those tokens.
//! `JOBSINK_FUZZ_INPUTS` sets the inputs per target (default 20,000, what CI runs);
//! `JOBSINK_FUZZ_SEED` another seed. The documented run (docs/testing.md#fuzzing):
//!
//! ```sh
//! JOBSINK_FUZZ_INPUTS=400000 cargo test --test fuzz -- --nocapture
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};

use http::{HeaderMap, HeaderName, HeaderValue};
use jobsink::cloudevent::{decode, from_json, to_json};
use jobsink::crd::SinkId;
use jobsink::location::{location, parse_location};

fn budget() -> usize {
    std::env::var("JOBSINK_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// splitmix64: small, fast, and the same inputs for the same seed.
struct Rng(u64);

impl Rng {
    fn new(target: u64) -> Self {
        let seed = std::env::var("JOBSINK_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5EED);
        Rng(seed ^ target.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TOKENS: &[&str] = &[
    "%",
    "%2",
    "%2F",
    "%FF",
    "%C3%A9",
    "%zz",
    "\0",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "1e999",
    "-0",
    "01",
    "\u{2212}",
    "é",
    "☕",
    "𝄞",
    "\r\n",
    "/",
    "//",
    "..",
    " ",
    "specversion",
    "1.0",
    "0.3",
    "id",
    "source",
    "type",
    "data",
    "data_base64",
    "datacontenttype",
    "datacontentencoding",
    "base64",
    "schemaurl",
    "dataschema",
    "subject",
    "time",
    "application/json",
    "text/plain",
    "application/cloudevents+json",
    "2024-02-30T25:61:61Z",
    "AAEC/w==",
    "====",
    "namespaces",
    "name",
    "sources",
    "ids",
];

/// Mutates `seed`: a few random edits, each a byte flip, a token insertion, a cut or a
/// repetition.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = rng.pick(TOKENS).as_bytes().to_vec();
                out.splice(at..at, token);
            }
            2 if at < out.len() => {
                let end = at + rng.below(out.len() - at);
                out.drain(at..end);
            }
            3 if at < out.len() => {
                let end = (at + rng.below(16)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

fn text(rng: &mut Rng, max_tokens: usize) -> String {
    (0..rng.below(max_tokens))
        .map(|_| {
            if rng.below(3) == 0 {
                char::from(b'a' + rng.below(26) as u8).to_string()
            } else {
                rng.pick(TOKENS).to_string()
            }
        })
        .collect()
}

/// Runs `check` on `input`, failing the test with the input when it panics.
fn no_panic<I: std::fmt::Debug>(input: &I, check: impl FnOnce(&I)) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("panicked on {input:?}: {message}");
    }
}

/// A decoded event must be storable, and its stored form must read back as the same event.
fn stored_form_reads_back(event: &jobsink::cloudevent::CloudEvent) {
    let stored = to_json(event);
    let back = from_json(&stored).unwrap_or_else(|e| {
        panic!(
            "the stored form does not decode ({e}): {}",
            String::from_utf8_lossy(&stored)
        )
    });
    assert_eq!(
        (&back.id, &back.source, &back.ty, &back.extensions),
        (&event.id, &event.source, &event.ty, &event.extensions)
    );
}

const STRUCTURED_SEEDS: &[&str] = &[
    r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#,
    r#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t","subject":"sub","datacontenttype":"application/octet-stream","data_base64":"AAEC/w==","myext":"value","n":42,"b":true}"#,
    r#"{"specversion":"0.3","id":"s-2","source":"/s","type":"t","datacontentencoding":"base64","data":"aGVsbG8=","schemaurl":"https://example.com/s"}"#,
    r#"{"specversion":"1.0","id":"x","source":"s","type":"t","datacontenttype":"text/plain","data":"hello","time":"2024-05-01T12:34:56.789+02:00","dataschema":"urn:x"}"#,
];

#[test]
fn structured_mode_never_panics_and_what_it_accepts_is_stored_faithfully() {
    let mut rng = Rng::new(1);
    let mut accepted = 0;
    for i in 0..budget() {
        let input = if i % 4 == 3 {
            let members: Vec<String> = (0..rng.below(8))
                .map(|_| format!("\"{}\":{}", text(&mut rng, 3), text(&mut rng, 4)))
                .collect();
            format!("{{{}}}", members.join(",")).into_bytes()
        } else {
            let seed = *rng.pick(STRUCTURED_SEEDS);
            mutate(&mut rng, seed.as_bytes())
        };
        no_panic(&input, |input| {
            if let Ok(event) = from_json(input) {
                accepted += 1;
                stored_form_reads_back(&event);
            }
        });
    }
    println!(
        "structured mode: {} inputs, {accepted} accepted, 0 panics",
        budget()
    );
}

const BINARY_SEED: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "123"),
    ("ce-source", "my/curl/command"),
    ("ce-type", "my.demo.event"),
    ("content-type", "application/json"),
];

const HEADER_NAMES: &[&str] = &[
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-subject",
    "ce-time",
    "ce-dataschema",
    "ce-schemaurl",
    "ce-datacontentencoding",
    "ce-data",
    "ce-myext",
    "ce-traceparent",
    "content-type",
    "traceparent",
    "tracestate",
    "ce-",
    "ce-x1",
];

#[test]
fn binary_mode_never_panics_and_what_it_accepts_is_stored_faithfully() {
    let mut rng = Rng::new(2);
    let mut accepted = 0;
    for _ in 0..budget() {
        let mut pairs: Vec<(String, Vec<u8>)> = BINARY_SEED
            .iter()
            .filter(|_| rng.below(8) != 0)
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        for _ in 0..rng.below(4) {
            let name = rng.pick(HEADER_NAMES).to_string();
            let value = text(&mut rng, 6).into_bytes();
            pairs.push((name, value));
        }
        for pair in &mut pairs {
            if rng.below(3) == 0 {
                pair.1 = mutate(&mut rng, &pair.1);
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &pairs {
            // What hyper would refuse never reaches the decoder.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        let body = mutate(&mut rng, br#"{"details":"JobSinkDemo"}"#);
        let input = (headers, body);
        no_panic(&input, |(headers, body)| {
            if let Ok(event) = decode(headers, body) {
                accepted += 1;
                stored_form_reads_back(&event);
            }
        });
    }
    println!(
        "binary mode: {} inputs, {accepted} accepted, 0 panics",
        budget()
    );
}

#[test]
fn the_location_parser_never_panics_and_every_location_parses_back() {
    let mut rng = Rng::new(3);
    let seed = b"/namespaces/default/name/job-sink-logger/sources/my%2Fcurl%2Fcommand/ids/123";
    for i in 0..budget() {
        let path = if i % 2 == 0 {
            String::from_utf8_lossy(&mutate(&mut rng, seed)).into_owned()
        } else {
            let parts = ["namespaces", "ns", "name", "n", "sources", "ids", ""];
            let segments: Vec<String> = (0..rng.below(10))
                .map(|_| {
                    if rng.below(2) == 0 {
                        rng.pick(&parts).to_string()
                    } else {
                        text(&mut rng, 4)
                    }
                })
                .collect();
            format!("/{}", segments.join("/"))
        };
        no_panic(&path, |path| {
            let _ = parse_location(path);
        });
        let sink = SinkId::new(text(&mut rng, 3) + "a", text(&mut rng, 3) + "b");
        let (source, id) = (text(&mut rng, 6) + "s", text(&mut rng, 6) + "i");
        let made = (sink, source, id);
        no_panic(&made, |(sink, source, id)| {
            let loc = location(sink, source, id);
            let parsed = parse_location(&loc).expect("a Location parses");
            assert_eq!(
                (&parsed.sink, &parsed.source, &parsed.id),
                (sink, source, id),
                "{loc}"
            );
        });
    }
    println!(
        "Location parser: {} paths and {} round trips, 0 panics",
        budget(),
        budget()
    );
}
