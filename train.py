"""Train an image-restoration transformer.

    python train.py                                              # the main job: configs/default.py
    python train.py --config configs/swinir.py:task=sr,scale=4,norm=iln --config.data.batch_size=32
    python train.py --config configs/hat_mini_iln.py:scale=2 --workdir /data/runs/hat-mini-x2

The work directory (default ``runs/<config.name>``; a local path, a file system shared by all
hosts, or a URL such as ``gs://bucket/run`` with ``requirements-cloud.txt`` installed) holds
checkpoints, logs, images and the compilation cache; running the same command again resumes from its
newest complete checkpoint, and refuses if the model changed (see ``iln_jax/train/resume.py``).
One run at a time per work directory (``<workdir>/LOCK``). ``--init_from=runs/a[:step]`` starts
a new run (new --workdir) from another run's weights.

Errors in the config, the data or the work directory are one line on stderr (exit status 1, or
2 for a config error); ``--verbosity=1`` or ``ILN_JAX_TRACEBACK=1`` shows the traceback. Keys
that do not exist in the config are errors. A ``gs://`` path without ``requirements-cloud.txt``
installed is refused before anything starts. A run stopped by SIGTERM exits with status 143 (as a
process killed by it), also when it saved its step first, so that a scheduler does not count a
preempted run as finished; re-running the same command continues it.

Multi-host (one process per host): pass ``--coordinator_address=host0:1234 --num_processes=N
--process_id=i`` (or set ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``);
on Cloud TPU pods, Slurm and other clusters JAX detects all three: pass ``--distributed``.
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from iln_jax import host_memory, paths
from iln_jax.errors import ConfigError, TerminatedError, exit_with_error, run_main, traceback_requested
from iln_jax.train.configs import load_config

ROOT = Path(__file__).resolve().parent

flags.DEFINE_string("workdir", None, "Work directory (default: runs/<config.name>)")
flags.DEFINE_string("init_from", None, "Start a new run from the weights of another run: <its workdir or "
                    "checkpoints dir>[:step] (sets config key train.init_from)")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-host training")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts), for multi-host training")
flags.DEFINE_integer("process_id", None, "Index of this process, for multi-host training")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() and let JAX detect the cluster "
                  "(Cloud TPU pods, Slurm, ...)")


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None,
                           auto: bool = False) -> None:
    """Start JAX's multi-process runtime from flags, else the environment, else cluster detection."""
    import jax
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator_address or num_processes is not None or process_id is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif auto:
        jax.distributed.initialize()


def _unknown_key(config, dotted: str) -> str | None:
    """Why ``dotted`` (e.g. ``train.foo``) is not a key of ``config``, naming the close ones."""
    node, done = config, []
    for part in dotted.split("."):
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
            where = ".".join(done) or "the config"
            close = difflib.get_close_matches(part, keys, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else (f"; keys of {where}: {', '.join(sorted(keys))}"
                                                                       if keys else "")
            return f"unknown config key {dotted!r}: {where} has no {part!r}{hint}"
        node, done = node[part], done + [part]
    return None


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def parse_flags(argv):
    """absl's flag parsing, with every mistake (unknown config key, bad value, bad config file)
    as one line on stderr and exit status 2."""
    try:
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.keys()  # the config file is loaded (and overridden) on first use
        return rest
    except Exception as e:  # noqa: BLE001 - absl and ml_collections raise many types here
        if traceback_requested():
            raise
        exit_with_error("train", ConfigError(_flag_error_message(e, argv)), 2)


def _flag_error_message(error: BaseException, argv) -> str:
    if isinstance(error, (AttributeError, KeyError)):  # an override of a key the config lacks
        spec = _config_spec(argv)
        try:
            config = load_config(spec if spec != "configs/default.py" else str(ROOT / "configs" / "default.py"))
        except Exception:  # noqa: BLE001 - then report the original error
            config = None
        for arg in argv[1:] if config is not None else ():
            if arg.startswith("--config.") and "=" in arg:
                found = _unknown_key(config, arg[len("--config."):].split("=", 1)[0])
                if found:
                    return f"{found} (from {arg})"
    inner = _innermost(error)
    if "Failed loading config" in str(inner) or "parsing config file" in str(error):
        spec = "--config=" + _config_spec(argv)
        lines = [s.strip() for s in str(inner).splitlines() if s.strip()]
        detail = lines[-1] if "Failed loading config" in str(inner) else " ".join(str(inner).split())
        return f"{spec}: {detail}"
    return " ".join(str(error).split())


def _config_spec(argv) -> str:
    """The last ``--config=X`` / ``--config X`` of the command line."""
    spec = "configs/default.py"
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
    return spec


class ConfigFileParser(flags.ArgumentParser):
    """``--config``'s value -> the locked config, read by ``iln_jax.train.load_config`` (from the file's
    path, from any directory; ml_collections' own reader needs ``configs`` on ``sys.path``)."""

    def parse(self, argument):
        try:
            return load_config(argument)
        except (TypeError, ValueError) as e:  # absl would prefix "flag "; name it as the other flag errors
            raise flags.Error(f"--config={argument}: {e}") from e

    def flag_type(self):
        return "config object"


def define_config_flag() -> None:
    """``--config`` (ml_collections applies the ``--config.<key>`` overrides of the default config
    already here, at definition time: a bad one is reported like the other flag errors)."""
    try:
        config_flags.DEFINE_config_file(
            "config", None, "Config file, optionally with ':args', e.g. configs/swinir.py:task=sr,scale=2")
        flags.FLAGS["config"].parser = ConfigFileParser()
        flags.FLAGS.set_default("config", str(ROOT / "configs" / "default.py"))
    except Exception as e:  # noqa: BLE001
        if __name__ != "__main__" or traceback_requested():
            raise
        exit_with_error("train", ConfigError(_flag_error_message(e, sys.argv)), 2)


define_config_flag()


# Config keys holding paths that may be URLs (each checked for its optional packages up front).
_PATH_KEYS = ("data.root", "data.lr_root", "data.tfds_data_dir", "data.eval_root", "data.eval_lr_root",
              "train.compilation_cache_dir")
BAD_IMAGE_HINT = "--config.data.on_bad_image=skip leaves unusable images out and lists them"


def check_paths(config, workdir: str) -> None:
    """Every URL of the run has its file-system packages (one line naming requirements-cloud.txt)."""
    paths.require_url_support(workdir, f"--workdir {workdir}", checkpoints=True)
    if config.train.init_from:
        source = config.train.init_from
        paths.require_url_support(source, f"train.init_from {source}", checkpoints=True)
    for key in _PATH_KEYS:
        section, name = key.split(".")
        value = config[section].get(name)
        if isinstance(value, str) and value:
            paths.require_url_support(value, f"{key} {value}")


def describe_run(config, workdir: str) -> str:
    """The line that says where the run goes and which norm (and input scaling) it trains."""
    stdnorm = config.model.kwargs.get("stdnorm")
    scaling = ", stdnorm on (inputs divided by the RGB std, as the official i-LN)" if stdnorm else ""
    return f"[train] {workdir}: {config.model.arch}, norm {config.model.norm}{scaling}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    config = FLAGS.config
    if FLAGS.init_from:
        if config.train.init_from not in (None, FLAGS.init_from):
            raise ConfigError(f"--init_from={FLAGS.init_from} and --config.train.init_from="
                              f"{config.train.init_from} disagree; give one")
        config.train.init_from = FLAGS.init_from
    workdir = FLAGS.workdir or str(Path("runs") / config.name)
    check_paths(config, workdir)
    host_memory.configure()  # before JAX starts its backends
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed)
    import jax
    from iln_jax.train import train_and_evaluate
    if jax.process_index() == 0:
        print(describe_run(config, workdir), flush=True)
    summary = train_and_evaluate(config, workdir)
    if summary["status"] == "preempted":
        return TerminatedError.exit_code  # 128 + SIGTERM: not finished, re-run to continue
    return 0 if summary["status"] == "completed" else 1


def _main(argv):
    from iln_jax.data import BadImageError
    return run_main("train", lambda: main(argv), show_traceback=flags.FLAGS["verbosity"].value >= 1,
                    hints={BadImageError: BAD_IMAGE_HINT})


if __name__ == "__main__":
    app.run(_main, flags_parser=parse_flags)
