"""``python -m iln_jax.compare [train] ...``: the forward comparison, or with ``train`` the run-level one."""
import sys

from iln_jax.errors import run_cli


def _main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":
        from iln_jax.compare import training
        training.main(argv[1:])
    else:
        from iln_jax.compare import forward
        forward.main(argv)


if __name__ == "__main__":
    run_cli("compare", _main)
