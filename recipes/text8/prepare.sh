#!/usr/bin/env bash
# text8 (Matt Mahoney's text8.zip: 100,000,000 bytes of a-z and space), for fairseq.
#
#   recipes/text8/prepare.sh OUT_DIR [FILE] [--size N --download-size N --split-sizes A B C]   (overrides: tests only)
#
# FILE: a local text8.zip; without it the zip is downloaded from mattmahoney.net/dc.
# Either way the zip's size (31,344,016 bytes, as TensorFlow's word2vec tutorial pins it), the
# content's size and its alphabet are checked; split 90M/5M/5M in order, streamed from the zip
# (the single 100M-byte line is never held as Python strings). Writes OUT_DIR/raw, OUT_DIR/text8.
exec bash "$(dirname "$0")/../common/prepare_bytes.sh" text8 \
    "http://mattmahoney.net/dc/text8.zip" text8.zip "$@"
