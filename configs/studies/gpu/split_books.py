#!/usr/bin/env python3
"""Split the concatenated Gutenberg files into one file per book, at manifest.tsv's offsets.

    split_books.py SHARED_PRETRAIN_DIR OUT_DIR

SHARED_PRETRAIN_DIR holds gutenberg_train_00..03.txt, gutenberg_val.txt and manifest.tsv
(columns file, byte_offset, byte_len, ...; one row per book). Writes OUT_DIR/train/ (the 100
books of gutenberg_train_*.txt) and OUT_DIR/val/ (the 7 books of gutenberg_val.txt), each book
as <file stem>-<index>.txt with exactly the bytes [byte_offset, byte_offset + byte_len) of its
file, so `sluice data prepare --documents files` over a folder makes one document per book
(names sort in manifest order). Refuses anything but newlines between and after the books, so
no text is dropped silently. Standard library only (the GPU machine has no package registry).
"""
import csv
import os
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(src, "manifest.tsv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    books = {}
    for r in rows:
        books.setdefault(r["file"], []).append((int(r["byte_offset"]), int(r["byte_len"])))
    counts = {"train": 0, "val": 0}
    for name in sorted(books):
        split = "val" if name == "gutenberg_val.txt" else "train"
        if split == "train" and not name.startswith("gutenberg_train_"):
            continue  # only the files this study trains or validates on
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        os.makedirs(os.path.join(out, split), exist_ok=True)
        pos = 0
        for i, (offset, length) in enumerate(sorted(books[name])):
            if offset < pos or offset + length > len(data) or data[pos:offset].strip(b"\n"):
                print(f"{name}: book {i} at {offset} (+{length}) does not follow byte {pos} with newlines only",
                      file=sys.stderr)
                return 1
            with open(os.path.join(out, split, f"{name[:-4]}-{i:03d}.txt"), "wb") as f:
                f.write(data[offset:offset + length])
            pos = offset + length
            counts[split] += 1
        if data[pos:].strip(b"\n"):
            print(f"{name}: text after the last book (byte {pos})", file=sys.stderr)
            return 1
    print(f"split {counts['train']} training and {counts['val']} validation books into {out}/train and {out}/val")
    return 0 if counts["train"] and counts["val"] else 1


if __name__ == "__main__":
    sys.exit(main())
