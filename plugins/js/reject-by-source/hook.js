// Event phase only, the same job as plugins/reject-by-source (Rust): accepts events whose
// `source` starts with one of the prefixes in the sink's config (one per line) and rejects
// the others with 403 `SourceNotAllowed`; accepted events get the extension
// `sourcechecked=true`.
import { log } from 'jobsink:hook/host@0.1.0';

function prefixes(config) {
  return config.split('\n').map((line) => line.trim()).filter((line) => line !== '');
}

export const config = {
  // A thrown string is the `err` of `result<_, string>`.
  validateConfig(config) {
    if (prefixes(config).length === 0) {
      throw 'list at least one allowed source prefix, one per line';
    }
  },
};

export const eventPhase = {
  onEvent(ctx, event) {
    const source = event.source;
    if (!prefixes(ctx.config).some((prefix) => source.startsWith(prefix))) {
      log('info', `source ${source} is not allowed`);
      return {
        tag: 'reject',
        val: {
          code: 403,
          reason: 'SourceNotAllowed',
          message: `events from ${source} are not accepted by this sink`,
        },
      };
    }
    const extensions = [...event.extensions, { name: 'sourcechecked', value: 'true' }];
    extensions.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { tag: 'modify', val: { ...event, extensions } };
  },
};
