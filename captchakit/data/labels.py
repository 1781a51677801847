"""Labels files: `filename,label` per line, for folders whose file names carry no label.

CSV or TSV, the delimiter sniffed from the first line (a comma or a tab), a header line
optional. File names are matched to the image folder by their last path part, so a file
written as `images/0001.png` still finds `0001.png`; a name written without an extension
(`0001`) finds the one image with that stem.

Mistakes that leave the file ambiguous (another delimiter, a line with the wrong number of
fields, one file given two labels, no usable entry) stop with one line; those that only
cost an image (an empty label, an entry for a file that is not there) are counted and
reported, and training goes on with the rest.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from captchakit.errors import UserError
from captchakit.settings import IMAGE_EXTENSIONS

FOLDER_LABELS = "labels.csv"  # a folder's own labels file, read without --labels (captcha_label.py writes it)
DELIMITERS = {",": "comma", "\t": "tab"}
OTHER_DELIMITERS = {";": "semicolon", "|": "vertical bar", ":": "colon", " ": "space"}
HEADER_WORDS = {"file", "filename", "file_name", "name", "image", "img", "path", "image_path", "id", "fname"}


@dataclass
class LabelsFile:
    """The entries of one labels file: file name (last path part) -> label."""

    path: Path
    flag: str
    delimiter: str
    header: bool
    labels: dict[str, str] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # names whose label is empty
    repeated: int = 0  # identical lines given more than once, ignored

    def __len__(self) -> int:
        return len(self.labels) + len(self.empty)


def _has_image_ext(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _sniff(path: Path, flag: str, first: str) -> str:
    """The delimiter of `first` (the first non-blank line): a tab or a comma, else a one-line error."""
    for delim in ("\t", ","):
        if delim in first:
            return delim
    for delim, name in OTHER_DELIMITERS.items():
        if delim in first.strip():
            raise UserError(f"{flag} {path} line 1: fields are separated by a {name}; use a comma or a tab (filename,label)")
    raise UserError(f"{flag} {path} line 1: one field {first.strip()[:40]!r}, expected filename,label separated by a comma or a tab")


def _is_header(rows: list[tuple[int, list[str]]]) -> bool:
    first = rows[0][1][0].strip()
    if first.lower() in HEADER_WORDS:
        return True
    return not _has_image_ext(first) and any(_has_image_ext(r[0].strip()) for _, r in rows[1:6])


def _read_text(path: Path, flag: str) -> str:
    if not path.exists():
        raise UserError(f"{flag} {path}: file not found; pass a CSV or TSV file of filename,label lines")
    if path.is_dir():
        raise UserError(f"{flag} {path}: a folder, not a labels file; pass a CSV or TSV file of filename,label lines")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{flag} {path}: not a UTF-8 text file; save it as CSV or TSV text") from None
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot read it ({err.strerror})") from None


def own_labels_file(folder) -> str | None:
    """`folder`/labels.csv when the folder has one: its labels then count over the file names'."""
    path = Path(folder) / FOLDER_LABELS if folder else None
    return str(path) if path is not None and path.is_file() else None


def read_labels_file(path, flag: str = "--labels") -> LabelsFile:
    """Parse a labels file; raise UserError (one line, with the line number) where it is ambiguous."""
    path = Path(path)
    text = _read_text(path, flag)
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise UserError(f"{flag} {path}: the file is empty; write one filename,label line per image")
    delim = _sniff(path, flag, first)
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delim), 1) if any(c.strip() for c in row)]
    header = _is_header(rows)
    out = LabelsFile(path, flag, delim, header)
    seen: dict[str, tuple[int, str]] = {}  # name -> (line, label)
    for line, row in rows[1:] if header else rows:
        if len(row) != 2:
            what = DELIMITERS[delim]
            raise UserError(f"{flag} {path} line {line}: {len(row)} field(s), expected 2 (filename,label) separated by a {what}")
        name, label = PurePosixPath(row[0].strip().replace("\\", "/")).name, row[1].strip()
        if not name:
            raise UserError(f"{flag} {path} line {line}: empty file name; every line needs filename,label")
        if name in seen:
            if seen[name][1] != label:
                raise UserError(
                    f"{flag} {path} line {line}: {name} is listed again with another label "
                    f"({label!r} here, {seen[name][1]!r} on line {seen[name][0]}); keep one line per file"
                )
            out.repeated += 1
            continue
        seen[name] = (line, label)
        if label:
            out.labels[name] = label
        else:
            out.empty.append(name)
    if not out.labels:
        if out.empty:
            raise UserError(f"{flag} {path}: every label is empty; fill in the second column (filename,label)")
        raise UserError(f"{flag} {path}: no entries after the header; write one filename,label line per image")
    return out


@dataclass
class Matched:
    """A labels file matched to a folder's image names."""

    labels: dict[str, str]  # image file name in the folder -> label
    unknown: list[str]  # labels-file names with no such image in the folder

    def notes(self, lf: LabelsFile, folder) -> list[str]:
        """Lines that say what was ignored; empty when everything matched."""
        out = []
        if self.unknown:
            out.append(f"{lf.path}: {len(self.unknown):,} file name(s) not found in {folder}, ignored (first: {self.unknown[0]})")
        if lf.empty:
            out.append(f"{lf.path}: {len(lf.empty):,} entry(ies) with an empty label, skipped (first: {lf.empty[0]})")
        if lf.repeated:
            out.append(f"{lf.path}: {lf.repeated:,} repeated line(s) ignored")
        return out


def match_folder(lf: LabelsFile, names: list[str], folder) -> Matched:
    """Map the file's entries onto `names` (the folder's image files); a one-line error if none match."""
    present = set(names)
    by_stem: dict[str, list[str]] = {}
    for n in names:
        by_stem.setdefault(n.rsplit(".", 1)[0], []).append(n)
    labels, unknown = {}, []
    for key, label in lf.labels.items():
        if key in present:
            labels[key] = label
        elif not _has_image_ext(key) and len(by_stem.get(key, ())) == 1:
            labels[by_stem[key][0]] = label
        else:
            unknown.append(key)
    if not labels:
        raise UserError(
            f"{lf.flag} {lf.path}: none of its {len(lf.labels):,} file names is an image in {folder} "
            f"(first: {unknown[0]}); pass the folder that this labels file describes"
        )
    return Matched(labels, unknown)


def write_labels_file(path, labels: dict[str, str]) -> None:
    """Write `filename,label` lines with a header (TSV if the path ends in .tsv)."""
    delim = "\t" if str(path).lower().endswith(".tsv") else ","
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delim, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(sorted(labels.items()))
