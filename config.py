"""The command line of every script: `--key=value` overrides of a @dataclass config.

No argparse boilerplate and no config hierarchy: each script declares one dataclass whose fields (with comments)
are its options. Unknown keys and values of the wrong type stop the script with a one-line message that lists
what is valid, before anything expensive starts.
"""

import dataclasses
import sys


def _convert(key, raw, default):
    """Parse `raw` as the type of the field's default value (bool, int, float, str; None-default fields take str)."""
    kind = type(default)
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes"):
                return True
            if raw.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise SystemExit(f"error: --{key}={raw!r} is not a valid {kind.__name__}") from None
    return raw


def parse_args(config, argv=None):
    """Apply `--key=value` arguments (default: sys.argv[1:]) to a copy of the dataclass instance `config`."""
    argv = sys.argv[1:] if argv is None else argv
    fields = {f.name: f for f in dataclasses.fields(config)}
    updates = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise SystemExit(f"error: arguments look like --key=value, got {arg!r}")
        key, raw = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in fields:
            raise SystemExit(f"error: unknown option --{key}; valid: " + " ".join(f"--{k}" for k in fields))
        updates[key] = _convert(key, raw, getattr(config, key))
    return dataclasses.replace(config, **updates)
