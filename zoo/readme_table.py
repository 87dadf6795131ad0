"""Rewrite the README's zoo table from the manifest (what `nq-zoo list --markdown` prints), in
place between its markers; tests/test_readme.py fails until this is run after a zoo update.

    python zoo/readme_table.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nq_plugin.zoo.listing import markdown_table  # noqa: E402
from nq_plugin.files import atomic_write_text  # noqa: E402
from nq_plugin.zoo.manifest import Manifest  # noqa: E402


def main():
    path = os.path.join(os.path.dirname(HERE), "README.md")
    text = open(path, encoding="utf-8").read()
    head, rest = text.split("<!-- zoo-table", 1)
    marker, rest = rest.split("-->", 1)
    _, tail = rest.split("<!-- /zoo-table -->", 1)
    table = markdown_table(Manifest.load())
    atomic_write_text(path, f"{head}<!-- zoo-table{marker}-->\n{table}\n<!-- /zoo-table -->{tail}")
    print(table)


if __name__ == "__main__":
    main()
