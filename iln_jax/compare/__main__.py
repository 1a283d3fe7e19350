"""``python -m iln_jax.compare [train] ...``: the forward comparison, or with ``train`` the run-level one."""
import sys

from iln_jax.errors import run_main


def _main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "train":
        from iln_jax.compare import training
        training.main(argv[1:])
    else:
        from iln_jax.compare import forward
        forward.main(argv)


if __name__ == "__main__":
    run_main("compare", _main)
