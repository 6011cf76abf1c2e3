//! Hooks stored in OCI registries (`spec.hook.image`), in the layout the Wasm OCI tools
//! use (wkg and wasm-pkg): an OCI image manifest whose config has the media type
//! [`WASM_CONFIG_MEDIA_TYPE`] and whose one layer, of media type [`WASM_LAYER_MEDIA_TYPE`], is
//! the component's bytes.
//!
//! A reference must be pinned by digest (`<registry>/<repository>@sha256:<hex>`): a tag alone
//! is refused ([`PullError::NotPinned`]), since what a tag names can change under a sink
//! without its owner saying so. The manifest's bytes must hash to that digest and the layer's
//! bytes to the digest the manifest gives; the layer may be at most the size the loader
//! accepts ([`MAX_COMPONENT_BYTES`], checked on the manifest's word before anything is
//! downloaded and again while reading), the manifest at most [`MAX_MANIFEST_BYTES`], and a
//! pull takes at most the pull timeout. Plain HTTP is used only for a reference marked
//! insecure (`spec.hook.insecureRegistry`).
//!
//! What was pulled is kept on disk by digest ([`ImageCache`]): manifests and components are
//! both files named by their sha256 and checked against it whenever they are read, so every
//! sink (and every restart on the same disk) using a digest shares one copy, and a changed
//! file is only ever a miss.
//!
//! `jobsink hook push FILE REF` ([`push`]) writes a component in that layout and prints the
//! pinned reference to put in a JobSink.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::settings::MAX_COMPONENT_BYTES;

/// Media type of the config blob of a Wasm component artifact (wkg, wasm-pkg).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the one layer: the component's bytes.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Largest manifest accepted: one config and one layer take well under 1 KiB.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// Default time one pull may take (`--hook-pull-timeout-seconds`).
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default directory of the hook caches (`--hook-cache-dir`): under the container's only
/// writable path.
pub const DEFAULT_CACHE_DIR: &str = "/tmp/jobsink-hooks";
/// How long connecting to a registry may take, within the pull timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A reference to a hook in a registry: `<registry>/<repository>[:<tag>][@sha256:<hex>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Host, with its port if any (`ghcr.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path in the registry (`org/hooks/route`).
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`.
    pub digest: Option<String>,
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 512 || text.chars().any(|c| c.is_whitespace()) {
            return Err("an image reference is a non-empty word of at most 512 characters".into());
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest {
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                format!("the digest {digest:?} is not sha256:<64 lowercase hex digits>")
            })?;
            if !is_sha256_hex(hex) {
                return Err(format!(
                    "the digest {digest:?} is not sha256:<64 lowercase hex digits>"
                ));
            }
        }
        let (registry, path) = name.split_once('/').ok_or_else(|| {
            format!(
                "{name:?} names no registry: write <registry>/<repository>@sha256:<digest>, \
                 e.g. ghcr.io/org/hook@sha256:..."
            )
        })?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(format!(
                "{registry:?} is not a registry host (it has no '.' or port): write the \
                 registry in full, e.g. docker.io/{name}"
            ));
        }
        if !registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return Err(format!("{registry:?} is not a registry host"));
        }
        // A tag is what follows the last ':' of the last path segment.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                    })
                    && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            });
        if !repo_ok {
            return Err(format!(
                "{repository:?} is not a repository name (lowercase letters, digits, '.', '_', \
                 '-', separated by '/')"
            ));
        }
        if let Some(tag) = tag {
            let tag_ok = (1..=128).contains(&tag.len())
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !tag_ok {
                return Err(format!("{tag:?} is not a tag"));
            }
        }
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// The reference pinned to `digest`, without a tag: what to put in a JobSink.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }
}

fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Why a hook could not be had from its registry.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("spec.hook.image {0:?} is not a valid reference: {1}")]
    BadReference(String, String),
    #[error(
        "spec.hook.image {0:?} names a tag, not a digest: pin it as {1}@sha256:<digest> \
         (`jobsink hook push` prints one; a tag could change what runs without the sink changing)"
    )]
    NotPinned(String, String),
    #[error("the pull secret {0}: {1}")]
    Secret(String, String),
    #[error("pulling {0}: {1}")]
    Fetch(String, String),
    #[error("the {what} of {image} has digest {actual}, not {expected}")]
    DigestMismatch {
        image: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{0} is not a Wasm component artifact: {1}")]
    NotWasm(String, String),
    #[error("the {what} of {image} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        image: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

impl PullError {
    /// The `HookReady` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::BadReference(..) => "HookImageInvalid",
            PullError::NotPinned(..) => "HookImageNotPinned",
            PullError::Secret(..) => "HookPullSecretInvalid",
            PullError::Fetch(..) => "HookPullFailed",
            PullError::DigestMismatch { .. } => "HookDigestMismatch",
            PullError::NotWasm(..) => "HookNotAWasmArtifact",
            PullError::TooLarge { .. } => "HookTooLarge",
        }
    }

    /// Whether trying again later may succeed: the registry or the network failed, or the
    /// pull secret is missing or wrong (it can be fixed without changing the sink).
    pub fn retryable(&self) -> bool {
        matches!(self, PullError::Fetch(..) | PullError::Secret(..))
    }
}

/// How to reach a registry.
#[derive(Clone, Debug)]
pub struct Access {
    /// Plain HTTP instead of HTTPS (`spec.hook.insecureRegistry`).
    pub insecure: bool,
    pub auth: RegistryAuth,
    /// Longest time the whole pull may take.
    pub timeout: Duration,
}

/// Components and manifests on disk, each a file named after its sha256 and checked against
/// it when read.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl ImageCache {
    /// The cache in `dir`, created (mode 0700) when missing.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(ImageCache {
            dir: dir.to_owned(),
            max_bytes,
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.replace(':', "-"))
    }

    /// The blob with `digest`, when a file whose bytes hash to it is here (a file that does
    /// not is deleted).
    fn get(&self, digest: &str, limit: usize) -> Option<Vec<u8>> {
        let path = self.path(digest);
        let file = std::fs::File::open(&path).ok()?;
        let mut bytes = Vec::new();
        file.take(limit as u64 + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() <= limit && sha256_digest(&bytes) == digest {
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), "cached hook blob does not match its digest; pulling again");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Keeps `bytes` (whose digest was checked) unless the cache would pass its bound, or
    /// already holds a file of that digest (another manifest's pull may bring the same
    /// component; a file that no longer matches its name is deleted when read, then written
    /// again).
    fn put(&self, digest: &str, bytes: &[u8]) {
        if self.path(digest).is_file() {
            return;
        }
        let used = super::disk::used_bytes(&self.dir);
        if used.saturating_add(bytes.len() as u64) > self.max_bytes {
            tracing::info!("hook image cache full; {digest} is not kept on disk");
            return;
        }
        if let Err(error) = super::disk::write_whole(&self.dir, &self.path(digest), &[bytes]) {
            tracing::warn!(%error, "could not keep a pulled hook on disk");
        }
    }

    /// The marker saying that the manifest `digest` was pulled without credentials.
    fn public_marker(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("public-{}", digest.replace(':', "-")))
    }

    /// Whether the manifest `digest` was pulled without credentials: then anyone who can
    /// reach its registry can read it, and a sink needs no proof to be served from the cache.
    fn is_public(&self, digest: &str) -> bool {
        self.public_marker(digest).is_file()
    }

    /// Records that the manifest `digest` was pulled without credentials.
    fn mark_public(&self, digest: &str) {
        let marker = self.public_marker(digest);
        if let Err(error) = super::disk::write_whole(&self.dir, &marker, &[]) {
            tracing::warn!(%error, "could not record a hook image as public");
        }
    }

    /// The component of the manifest `digest`, from disk.
    fn component(&self, digest: &str) -> Option<Vec<u8>> {
        let manifest = self.get(digest, MAX_MANIFEST_BYTES)?;
        let layer = wasm_layer("cached", &manifest).ok()?;
        self.get(&layer.digest, MAX_COMPONENT_BYTES)
    }
}

/// Where a pulled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pulled {
    /// From the registry.
    Registry,
    /// From the cache on disk.
    Cache,
}

impl Pulled {
    /// The `result` label of `jobsink_hook_image_pulls_total`.
    pub fn label(self) -> &'static str {
        match self {
            Pulled::Registry => "pulled",
            Pulled::Cache => "cached",
        }
    }
}

/// The component `image` names: from `cache` when a checked copy is there, else from its
/// registry (then kept in `cache`). `image` must be pinned by digest.
pub async fn pull(
    image: &str,
    access: &Access,
    cache: Option<&ImageCache>,
) -> Result<(Vec<u8>, Pulled), PullError> {
    let parsed: ImageRef = image
        .parse()
        .map_err(|why| PullError::BadReference(image.to_owned(), why))?;
    let Some(digest) = parsed.digest.clone() else {
        let name = format!("{}/{}", parsed.registry, parsed.repository);
        return Err(PullError::NotPinned(image.to_owned(), name));
    };
    if let Some((cache, bytes)) = cache.and_then(|c| Some((c, c.component(&digest)?))) {
        // A copy pulled with someone's credentials is served only to a sink that can read
        // the image itself: its manifest is fetched again with this sink's access (one small
        // request, no download). Otherwise a tenant who learnt a digest would get another
        // tenant's private hook from the shared cache.
        if !cache.is_public(&digest) {
            within_timeout(image, access, fetch_manifest(&parsed, &digest, access)).await?;
        }
        return Ok((bytes, Pulled::Cache));
    }
    let (manifest, layer_digest, bytes) =
        within_timeout(image, access, fetch(&parsed, &digest, access)).await?;
    if let Some(cache) = cache {
        cache.put(&layer_digest, &bytes);
        cache.put(&digest, &manifest);
        if matches!(access.auth, RegistryAuth::Anonymous) {
            cache.mark_public(&digest);
        }
    }
    Ok((bytes, Pulled::Registry))
}

/// `work` on `image`, failed with a fetch error when it takes longer than the pull timeout.
async fn within_timeout<T>(
    image: &str,
    access: &Access,
    work: impl Future<Output = Result<T, PullError>>,
) -> Result<T, PullError> {
    tokio::time::timeout(access.timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(PullError::Fetch(
                image.to_owned(),
                format!("no answer within {} s", access.timeout.as_secs()),
            ))
        })
}

fn client(access: &Access) -> Result<Client, String> {
    // reqwest is built without a TLS provider of its own: the process uses ring (as kube's
    // client does). Installing it twice is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: if access.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        read_timeout: Some(access.timeout),
        connect_timeout: Some(CONNECT_TIMEOUT),
        max_concurrent_download: 1,
        // One request per blob: some registries (the node build's among them) answer a
        // chunked upload without the Location header the client needs; hooks are small.
        use_monolithic_push: true,
        user_agent: "jobsink",
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| format!("creating the registry client: {e}"))
}

/// Fetches and checks the manifest and the component: (manifest bytes, layer digest,
/// component bytes).
async fn fetch(
    image: &ImageRef,
    digest: &str,
    access: &Access,
) -> Result<(Vec<u8>, String, Vec<u8>), PullError> {
    let name = image.to_string();
    let fetch_error = |e: &dyn fmt::Display| PullError::Fetch(name.clone(), e.to_string());
    let (client, reference, manifest) = fetch_manifest(image, digest, access).await?;
    let layer = wasm_layer(&name, &manifest)?;
    let mut stream = client
        .pull_blob_stream(&reference, &layer)
        .await
        .map_err(|e| fetch_error(&e))?;
    let expected_len = usize::try_from(layer.size).unwrap_or(usize::MAX);
    let mut bytes = Vec::with_capacity(expected_len);
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(|e| fetch_error(&e))?;
        if bytes.len() + chunk.len() > expected_len {
            return Err(PullError::TooLarge {
                image: name,
                what: "component",
                size: (bytes.len() + chunk.len()) as u64,
                limit: expected_len as u64,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = sha256_digest(&bytes);
    if actual != layer.digest {
        return Err(PullError::DigestMismatch {
            image: name,
            what: "component",
            expected: layer.digest,
            actual,
        });
    }
    Ok((manifest, layer.digest, bytes))
}

/// Fetches the manifest `digest` of `image` with `access` and checks its size and digest:
/// (the client, the reference by digest, the manifest's bytes).
async fn fetch_manifest(
    image: &ImageRef,
    digest: &str,
    access: &Access,
) -> Result<(Client, Reference, Vec<u8>), PullError> {
    let name = image.to_string();
    let fetch_error = |e: &dyn fmt::Display| PullError::Fetch(name.clone(), e.to_string());
    let client = client(access).map_err(|e| fetch_error(&e))?;
    let reference = Reference::with_digest(
        image.registry.clone(),
        image.repository.clone(),
        digest.into(),
    );
    let (manifest, _) = client
        .pull_manifest_raw(&reference, &access.auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| fetch_error(&e))?;
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(PullError::TooLarge {
            image: name,
            what: "manifest",
            size: manifest.len() as u64,
            limit: MAX_MANIFEST_BYTES as u64,
        });
    }
    let actual = sha256_digest(&manifest);
    if actual != digest {
        return Err(PullError::DigestMismatch {
            image: name,
            what: "manifest",
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok((client, reference, manifest.to_vec()))
}

/// The one `application/wasm` layer of a manifest in the Wasm component layout, refused
/// when larger than [`MAX_COMPONENT_BYTES`].
fn wasm_layer(image: &str, manifest: &[u8]) -> Result<OciDescriptor, PullError> {
    let not_wasm = |why: String| PullError::NotWasm(image.to_owned(), why);
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| not_wasm(format!("its manifest is not an OCI image manifest: {e}")))?;
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(not_wasm(format!(
            "its config has media type {:?}, not {WASM_CONFIG_MEDIA_TYPE}",
            manifest.config.media_type
        )));
    }
    let [layer] = <[OciDescriptor; 1]>::try_from(manifest.layers).map_err(|layers| {
        not_wasm(format!(
            "it has {} layers, not one {WASM_LAYER_MEDIA_TYPE} layer",
            layers.len()
        ))
    })?;
    if layer.media_type != WASM_LAYER_MEDIA_TYPE {
        return Err(not_wasm(format!(
            "its layer has media type {:?}, not {WASM_LAYER_MEDIA_TYPE}",
            layer.media_type
        )));
    }
    if !layer
        .digest
        .strip_prefix("sha256:")
        .is_some_and(is_sha256_hex)
    {
        return Err(not_wasm(format!(
            "its layer's digest {:?} is not a sha256",
            layer.digest
        )));
    }
    if layer.size < 0 || layer.size as u64 > MAX_COMPONENT_BYTES as u64 {
        return Err(PullError::TooLarge {
            image: image.to_owned(),
            what: "component",
            size: layer.size.max(0) as u64,
            limit: MAX_COMPONENT_BYTES as u64,
        });
    }
    Ok(layer)
}

/// Registry credentials from a `kubernetes.io/dockerconfigjson` Secret's
/// `.dockerconfigjson`: the entry for `registry` (also written `https://registry` or
/// `http://registry`, with or without a path), as `auth` (base64 of `user:password`) or
/// `username` and `password`.
pub fn registry_auth(dockerconfigjson: &[u8], registry: &str) -> Result<RegistryAuth, String> {
    #[derive(serde::Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let config: DockerConfig = serde_json::from_slice(dockerconfigjson)
        .map_err(|e| format!("its .dockerconfigjson is not JSON of {{\"auths\": ...}}: {e}"))?;
    let host = |key: &str| {
        let key = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        key.split('/').next().unwrap_or(key).to_owned()
    };
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| host(key) == registry)
        .map(|(_, entry)| entry)
        .ok_or_else(|| format!("it has no credentials for {registry}"))?;
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let auth = entry.auth.as_deref().ok_or_else(|| {
        format!("its entry for {registry} has neither auth nor username and password")
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| format!("its auth for {registry} is not base64 of user:password"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("its auth for {registry} is not base64 of user:password"))?;
    Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
}

/// Pushes the component `wasm` to `image` (a tag, or none for `latest`) in the Wasm
/// component layout, and returns the pinned reference (`registry/repository@sha256:...`).
pub async fn push(wasm: Vec<u8>, image: &str, access: &Access) -> anyhow::Result<String> {
    let parsed: ImageRef = image
        .parse()
        .map_err(|why| anyhow::anyhow!("{image:?} is not a valid reference: {why}"))?;
    anyhow::ensure!(
        parsed.digest.is_none(),
        "push to a tag (or to the repository alone, which pushes :latest), not to a digest: \
         the digest is what push prints"
    );
    anyhow::ensure!(
        wasm.len() <= MAX_COMPONENT_BYTES,
        "the component is {} bytes, more than the {MAX_COMPONENT_BYTES} a hook may have",
        wasm.len()
    );
    // A component's preamble: the Wasm magic, then version 0x0d and layer 1.
    anyhow::ensure!(
        wasm.starts_with(b"\0asm\x0d\0\x01\0"),
        "the file is not a WebAssembly component (build hooks for wasm32-wasip2)"
    );
    let layer_digest = sha256_digest(&wasm);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    }))?;
    push_artifact(wasm, config, &parsed, access).await
}

/// Pushes `layer` and `config` to `image` (its tag, or `latest`) as a manifest in the Wasm
/// component layout, without the checks of [`push`] (tests push artifacts the dispatcher
/// must refuse with it), and returns the pinned reference.
pub async fn push_artifact(
    layer: Vec<u8>,
    config: Vec<u8>,
    image: &ImageRef,
    access: &Access,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let layer_digest = sha256_digest(&layer);
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_MEDIA_TYPE,
        "config": {
            "mediaType": WASM_CONFIG_MEDIA_TYPE,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": WASM_LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = sha256_digest(&manifest);
    let client = client(access).map_err(anyhow::Error::msg)?;
    let tag = image.tag.clone().unwrap_or_else(|| "latest".into());
    let reference = Reference::with_tag(image.registry.clone(), image.repository.clone(), tag);
    let by_digest = Reference::with_digest(
        image.registry.clone(),
        image.repository.clone(),
        manifest_digest.clone(),
    );
    client
        .store_auth_if_needed(&image.registry, &access.auth)
        .await;
    let work = async {
        for (what, blob, digest) in [
            ("the component", layer, &layer_digest),
            ("the config", config, &config_digest),
        ] {
            let pushed = client.push_blob(&reference, blob, digest).await;
            // The spec says a registry should answer an upload with a Location; some (the
            // node build's among them) do not. Then the blob is looked for.
            if let Err(OciDistributionError::RegistryNoLocationError) = pushed
                && client
                    .blob_exists(&reference, digest)
                    .await
                    .unwrap_or(false)
            {
                continue;
            }
            pushed.with_context(|| format!("pushing {what}"))?;
        }
        let pushed = client
            .push_manifest_raw(
                &reference,
                manifest,
                http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
            )
            .await;
        if let Err(OciDistributionError::RegistryNoLocationError) = pushed {
            let (stored, _) = client
                .pull_manifest_raw(&by_digest, &access.auth, &[OCI_IMAGE_MEDIA_TYPE])
                .await
                .context("reading the manifest back")?;
            anyhow::ensure!(
                sha256_digest(&stored) == manifest_digest,
                "the registry holds another manifest under {manifest_digest}"
            );
            return anyhow::Ok(());
        }
        pushed.context("pushing the manifest")?;
        anyhow::Ok(())
    };
    tokio::time::timeout(access.timeout, work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", access.timeout.as_secs()))??;
    Ok(image.pinned(&manifest_digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_already_in_the_cache_is_not_written_again_and_a_bad_one_is_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("jobsink-image-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = ImageCache::open(&dir, 1 << 20).unwrap();
        let bytes = b"component".to_vec();
        let digest = sha256_digest(&bytes);
        cache.put(&digest, &bytes);
        let inode = std::fs::metadata(cache.path(&digest)).unwrap().ino();
        // Another manifest's pull of the same component leaves the file as it is.
        cache.put(&digest, &bytes);
        assert_eq!(std::fs::metadata(cache.path(&digest)).unwrap().ino(), inode);
        assert_eq!(cache.get(&digest, 1024), Some(bytes.clone()));
        // A file that no longer matches its name is deleted when read, then written again.
        std::fs::write(cache.path(&digest), b"tampered").unwrap();
        assert_eq!(cache.get(&digest, 1024), None);
        cache.put(&digest, &bytes);
        assert_eq!(cache.get(&digest, 1024), Some(bytes));
        let _ = std::fs::remove_dir_all(&dir);
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_parsed_into_registry_repository_tag_and_digest() {
        let r: ImageRef = format!("ghcr.io/org/hooks/route@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/hooks/route");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(format!("sha256:{HEX}").as_str()));

        let r: ImageRef = format!("localhost:5000/hook:1.2@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "hook");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(
            r.to_string(),
            format!("localhost:5000/hook:1.2@sha256:{HEX}")
        );
        assert_eq!(
            r.pinned("sha256:x"),
            "localhost:5000/hook@sha256:x".to_owned()
        );

        let r: ImageRef = "127.0.0.1:5000/a/b:v1".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!((r.tag.as_deref(), r.digest), (Some("v1"), None));
    }

    #[test]
    fn malformed_references_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "non-empty"),
            ("hook@sha256:abc", "64 lowercase hex"),
            (&format!("ghcr.io/hook@md5:{HEX}"), "sha256:<64"),
            (
                &format!("ghcr.io/hook@sha256:{}", HEX.to_uppercase()),
                "64 lowercase hex",
            ),
            ("hook", "names no registry"),
            ("org/hook:1", "not a registry host"),
            ("ghcr.io/Org/hook", "not a repository name"),
            ("ghcr.io//hook", "not a repository name"),
            ("ghcr.io/hook:", "not a tag"),
            ("ghcr.io/hook:-x", "not a tag"),
            ("ghcr.io/ho ok", "non-empty word"),
        ] {
            let error = bad.parse::<ImageRef>().unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_tag_alone_is_refused_before_any_request() {
        let access = Access {
            insecure: true,
            auth: RegistryAuth::Anonymous,
            timeout: Duration::from_secs(1),
        };
        let error = pull("127.0.0.1:1/hook:latest", &access, None)
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "HookImageNotPinned");
        assert!(
            error
                .to_string()
                .contains("127.0.0.1:1/hook@sha256:<digest>"),
            "{error}"
        );
        assert!(!error.retryable());
    }

    #[test]
    fn credentials_come_from_the_registry_s_entry_of_a_dockerconfigjson() {
        let auth = base64::engine::general_purpose::STANDARD.encode("me:secret");
        let json = format!(
            r#"{{"auths":{{"https://ghcr.io/v1/":{{"auth":"{auth}"}},"quay.io":{{"username":"u","password":"p"}}}}}}"#
        );
        let basic = |auth| match auth {
            RegistryAuth::Basic(u, p) => (u, p),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            basic(registry_auth(json.as_bytes(), "ghcr.io").unwrap()),
            ("me".into(), "secret".into())
        );
        assert_eq!(
            basic(registry_auth(json.as_bytes(), "quay.io").unwrap()),
            ("u".into(), "p".into())
        );
        let error = registry_auth(json.as_bytes(), "docker.io").unwrap_err();
        assert!(error.contains("no credentials for docker.io"), "{error}");
        assert!(registry_auth(b"[]", "ghcr.io").is_err());
    }

    #[test]
    fn only_the_wasm_component_layout_is_accepted() {
        let layer = |media: &str, size: u64| {
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": format!("sha256:{HEX}"), "size": 2},
                "layers": [{"mediaType": media, "digest": format!("sha256:{HEX}"), "size": size}],
            })
            .to_string()
        };
        assert!(wasm_layer("x", layer(WASM_LAYER_MEDIA_TYPE, 10).as_bytes()).is_ok());
        let error = wasm_layer(
            "x",
            layer("application/vnd.oci.image.layer.v1.tar", 10).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(error.reason(), "HookNotAWasmArtifact");
        let error = wasm_layer(
            "x",
            layer(WASM_LAYER_MEDIA_TYPE, MAX_COMPONENT_BYTES as u64 + 1).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(error.reason(), "HookTooLarge");
    }

    #[test]
    fn the_cache_returns_only_bytes_that_match_their_digest() {
        let dir = std::env::temp_dir().join(format!("jobsink-image-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = ImageCache::open(&dir, 1 << 20).unwrap();
        let digest = sha256_digest(b"component");
        cache.put(&digest, b"component");
        assert_eq!(cache.get(&digest, 100).as_deref(), Some(&b"component"[..]));
        std::fs::write(cache.path(&digest), b"changed").unwrap();
        assert_eq!(cache.get(&digest, 100), None);
        assert!(!cache.path(&digest).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
