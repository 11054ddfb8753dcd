"""The command line of every script: `--key value` or `--key=value` overrides of a @dataclass config.

No argparse boilerplate: each script declares one dataclass whose fields, with a comment each, are its options (the
training scripts' extend run.RunConfig, the options they share); `--help` prints them with their defaults and those
comments. Unknown keys, missing values and values of the wrong type stop the script with a one-line message before
anything expensive starts.
"""

import dataclasses
import inspect
import re
import sys


def _convert(key, raw, default):
    """Parse `raw` as the type of the field's default value (bool, int, float, str)."""
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


def field_help(cls):
    """{field: the comment on its line} for a dataclass and the dataclasses it extends, read from their source."""
    out = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for name, comment in re.findall(r"^\s+(\w+): [^#\n]+?(?:#\s*(.*))?$", source, re.M):
            out[name] = comment.strip()
    return out


def usage(config):
    """The options of `config`'s dataclass, one line each: --name (default) and its comment; the class's own options
    first, then those it extends (a training script's knobs before the run options every script shares)."""
    helps, own = field_help(type(config)), type(config).__dict__.get("__annotations__", {})
    lines = ["options (--key value or --key=value), defaults in brackets:"]
    for f in sorted(dataclasses.fields(config), key=lambda f: f.name not in own):
        lines.append(f"  --{f.name:<14} [{getattr(config, f.name)!s}]  {helps.get(f.name, '')}".rstrip())
    return "\n".join(lines)


def parse_args(config, argv=None):
    """Apply `--key value` / `--key=value` arguments (default: sys.argv[1:]) to a copy of the dataclass `config`.
    `--help` prints the options and exits."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fields = [f.name for f in dataclasses.fields(config)]
    updates, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            try:
                print(usage(config))
            except BrokenPipeError:  # `--help | head`
                pass
            raise SystemExit(0)
        if not arg.startswith("--") or arg == "--":
            raise SystemExit(f"error: options look like --key value or --key=value, got {arg!r} (--help lists them)")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, raw = arg[2:], argv[i + 1]
            i += 1
        else:
            raise SystemExit(f"error: {arg} needs a value: {arg} VALUE or {arg}=VALUE")
        key = key.replace("-", "_")
        if key not in fields:
            raise SystemExit(f"error: unknown option --{key}; valid: " + " ".join(f"--{k}" for k in fields))
        updates[key] = _convert(key, raw, getattr(config, key))
        i += 1
    return dataclasses.replace(config, **updates)


def changed(cfg, ignore=()):
    """[(name, value)] of the options of `cfg` that differ from its dataclass's defaults, in field order, leaving out
    `ignore` and the bookkeeping options that do not name a different experiment (run, resume, device, the starting
    checkpoint's path, the periodic evaluations). Run names and results-table labels are built from this one list."""
    skip = {"run", "resume", "device", "init", "eval_every", "eval_n", *ignore}
    default = type(cfg)()
    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if f.name not in skip and getattr(cfg, f.name) != getattr(default, f.name)]


def run_name(script, cfg, ignore=()):
    """out/<name> of a run: the script, the options changed from their defaults (seed aside), the seed:
    `pi_distill_s0`, `pi_distill_alpha1_pi-tools_s2`."""
    parts = [f"{k}{_short(v)}" if not isinstance(v, str) else f"{k}-{v}"
             for k, v in changed(cfg, ("seed", *ignore))]
    return "_".join([script, *parts, f"s{cfg.seed}"]).replace("/", "-")


def label(method, cfg, ignore=()):
    """A results-table row: the method's name, then the options changed from their defaults, if any:
    `π-Distill α=0.5 (pi tools, beta 0)`. Runs that differ only in their seed share a row."""
    parts = [f"{k} {_short(v)}" for k, v in changed(cfg, ("seed", *ignore))]
    return method + (f" ({', '.join(parts)})" if parts else "")


def _short(value):
    return f"{value:g}" if isinstance(value, float) else str(int(value) if isinstance(value, bool) else value)
