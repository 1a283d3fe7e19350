"""Prepare a ``df2k`` or ``rain13k`` TFDS data set from local folders (run once, before training).

    python -m iln_jax.data.prepare_tfds df2k/x4 --manual_dir /data/DF2K --data_dir /data/tfds
    python -m iln_jax.data.prepare_tfds rain13k --manual_dir /data/Deraining/Datasets/train --data_dir /data/tfds

Then train with ``source="tfds"``, ``tfds_data_dir=/data/tfds`` (and ``tfds_name`` when the default
for the task is not the one prepared). Kept apart from ``tfds_builders.py`` because running that
module as ``__main__`` would register its builders twice.
"""
import argparse

import tensorflow_datasets as tfds

from iln_jax.data import tfds_builders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="df2k/x2, df2k/x3, df2k/x4, df2k/hr or rain13k")
    parser.add_argument("--manual_dir", required=True, help="folder holding the data set's images")
    parser.add_argument("--data_dir", required=True, help="where the ArrayRecord files are written")
    args = parser.parse_args()
    builder = tfds.builder(args.name, data_dir=args.data_dir)
    tfds_builders.prepare(builder, args.manual_dir)
    print(f"{args.name}: {builder.info.splits['train'].num_examples} examples in {builder.data_dir}")


if __name__ == "__main__":
    main()
