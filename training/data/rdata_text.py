"""Read the character vectors of an R package's lazy-load data (Rdata.rdx/.rdb).

janeaustenr keeps each novel as one character vector (a line per element) in R's
lazy-load database: `Rdata.rdx` is a gzip'd serialised index (name -> offset,
length into `Rdata.rdb`), and every `.rdb` entry is a 4-byte big-endian length
followed by a zlib stream holding one XDR-serialised R object. Only the object
kinds those files use are decoded; anything else raises, so a format change
fails loudly instead of yielding partial text.

Usage: rdata_text.py PKG_DATA_DIR OUT_DIR  (writes OUT_DIR/<name>.txt)
"""

import gzip
import struct
import sys
import zlib
from pathlib import Path

# SEXP type codes from R's serialize.c (public format documentation).
NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = (
    0, 1, 2, 9, 10, 13, 14, 16, 19)
REFSXP, NILVALUE_SXP, EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP = (
    255, 254, 242, 241, 253)
PAIRLIST_LIKE = {LISTSXP, 3, 5, 6, 17}  # LISTSXP CLOSXP PROMSXP LANGSXP DOTSXP


class RReader:
    """Decodes one XDR ("X\\n") serialisation stream."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.refs = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"R stream truncated at byte {self.pos} (wanted {n})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def header(self):
        if self.take(2) != b"X\n":
            raise ValueError("not an XDR R serialisation (expected 'X\\n')")
        version = self.int()
        self.int()  # writer's R version
        self.int()  # oldest reader version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"R serialisation version {version} unsupported")

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if kind == NILVALUE_SXP or kind in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP):
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()
            self.refs.append(("symbol", name))
            return ("symbol", name)
        if kind in PAIRLIST_LIKE:
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            return {"pair": (tag, car), "next": cdr, "attr": attr}
        if kind == CHARSXP:
            length = self.int()
            return None if length == -1 else self.take(length).decode("utf-8", "replace")
        if kind in (LGLSXP, INTSXP):
            n = self.int()
            value = list(struct.unpack(f">{n}i", self.take(4 * n)))
        elif kind == REALSXP:
            n = self.int()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif kind in (STRSXP, VECSXP):
            value = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"R object type {kind} at byte {self.pos - 4} unsupported")
        value = RVector(value)
        if has_attr:
            value.attrs = pairlist_to_dict(self.item())
        return value


class RVector(list):
    """An R vector with its attributes (names, class, ...) kept beside it."""

    attrs: dict = {}


def named(vector: RVector) -> dict:
    return dict(zip(vector.attrs["names"], vector))


def read_object(blob: bytes):
    reader = RReader(blob)
    reader.header()
    return reader.item()


def pairlist_to_dict(node) -> dict:
    out = {}
    while node is not None:
        tag, car = node["pair"]
        out[tag[1] if tag else None] = car
        node = node["next"]
    return out


def lazyload_vectors(data_dir: Path) -> dict:
    """Returns {name: object} for every variable in DATA_DIR/Rdata.rdb."""
    index = named(read_object(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())))
    db = (data_dir / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in named(index["variables"]).items():
        entry = db[offset:offset + length]
        if len(entry) != length:
            raise ValueError(f"Rdata.rdb too short for {name}: {offset}+{length}")
        out[name] = read_object(zlib.decompress(entry[4:]))
    return out


def main():
    data_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, value in lazyload_vectors(data_dir).items():
        if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
            continue
        lines = ["" if v is None else v for v in value]
        (out_dir / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{name}: {len(lines)} lines")


if __name__ == "__main__":
    main()
