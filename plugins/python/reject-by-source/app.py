"""Event phase only, the same job as plugins/reject-by-source (Rust): accepts events whose
`source` starts with one of the prefixes in the sink's config (one per line) and rejects the
others with 403 `SourceNotAllowed`; accepted events get the extension `sourcechecked=true`.
"""

import dataclasses

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Attribute,
    EventDecision_Modify,
    EventDecision_Reject,
    Rejection,
)


def prefixes(config):
    return [line.strip() for line in config.splitlines() if line.strip()]


class Config(exports.Config):
    def validate_config(self, config):
        # Raising `Err` returns the `err` of `result<_, string>`.
        if not prefixes(config):
            raise Err("list at least one allowed source prefix, one per line")


class EventPhase(exports.EventPhase):
    def on_event(self, ctx, event):
        source = event.source
        if not any(source.startswith(prefix) for prefix in prefixes(ctx.config)):
            host.log(host.Level.INFO, f"source {source} is not allowed")
            return EventDecision_Reject(
                Rejection(
                    code=403,
                    reason="SourceNotAllowed",
                    message=f"events from {source} are not accepted by this sink",
                )
            )
        extensions = event.extensions + [Attribute(name="sourcechecked", value="true")]
        extensions.sort(key=lambda attribute: attribute.name)
        return EventDecision_Modify(dataclasses.replace(event, extensions=extensions))
