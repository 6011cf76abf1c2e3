;; A hook with three linear memories (`two-memories.wat` plus a third module with a memory
;; of one page), one more than `MAX_MEMORIES_PER_COMPONENT`: refused at load, naming the
;; cap (tests/hooks.rs, `a_hook_with_more_memories_than_the_cap_is_refused_at_load`).
;; Built from this text by the test with the `wat` crate.
(component
  (core module $side
    (memory (export "memory") 1)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0))))
  (core instance $side (instantiate $side))
  (core module $third
    (memory (export "memory") 1))
  (core instance $third (instantiate $third))

  (core module $main
    (import "side" "grow" (func $grow_side (param i32) (result i32)))
    (memory (export "memory") 1)
    ;; Bytes 16..32 stay zero: a result that is `ok` of `pass`, or `ok` of nothing.
    (global $next (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (global.set $next (i32.add (local.get $at) (local.get 3)))
      (block $fits
        (br_if $fits
          (i32.le_u (global.get $next) (i32.mul (memory.size) (i32.const 65536))))
        (br_if $fits
          (i32.ne
            (memory.grow
              (i32.add
                (i32.shr_u
                  (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
                  (i32.const 16))
                (i32.const 1)))
            (i32.const -1)))
        unreachable)
      (local.get $at))
    (func (export "validate-config") (param i32 i32) (result i32)
      (i32.const 16))
    (func (export "on-event") (param i32) (result i32)
      (if (i32.eq (call $grow_side (i32.const 384)) (i32.const -1)) (then unreachable))
      (if (i32.eq (memory.grow (i32.const 384)) (i32.const -1)) (then unreachable))
      (i32.const 16)))
  (core instance $main (instantiate $main (with "side" (instance $side))))

  (type $attribute (record (field "name" string) (field "value" string)))
  (type $cloud-event
    (record
      (field "id" string)
      (field "source" string)
      (field "type" string)
      (field "specversion" string)
      (field "subject" (option string))
      (field "time" (option string))
      (field "datacontenttype" (option string))
      (field "dataschema" (option string))
      (field "extensions" (list $attribute))
      (field "data" (option (list u8)))))
  (type $context
    (record (field "namespace" string) (field "sink" string) (field "config" string)))
  (type $rejection
    (record (field "code" u16) (field "reason" string) (field "message" string)))
  (type $event-decision
    (variant (case "pass") (case "modify" $cloud-event) (case "reject" $rejection)))

  (instance $types
    (export "attribute" (type $attribute))
    (export "cloud-event" (type $cloud-event))
    (export "context" (type $context))
    (export "rejection" (type $rejection))
    (export "event-decision" (type $event-decision)))
  (export $types-export "jobsink:hook/types@0.1.0" (instance $types))
  (alias export $types-export "context" (type $ctx))
  (alias export $types-export "cloud-event" (type $ev))
  (alias export $types-export "event-decision" (type $dec))

  (func $validate (param "config" string) (result (result (error string)))
    (canon lift (core func $main "validate-config")
      (memory $main "memory") (realloc (func $main "cabi_realloc"))))
  (func $on-event (param "ctx" $ctx) (param "event" $ev) (result (result $dec (error string)))
    (canon lift (core func $main "on-event")
      (memory $main "memory") (realloc (func $main "cabi_realloc"))))

  (instance $config (export "validate-config" (func $validate)))
  (export "jobsink:hook/config@0.1.0" (instance $config))
  (instance $event-phase
    (export "context" (type $ctx))
    (export "cloud-event" (type $ev))
    (export "event-decision" (type $dec))
    (export "on-event" (func $on-event)))
  (export "jobsink:hook/event-phase@0.1.0" (instance $event-phase))
)
