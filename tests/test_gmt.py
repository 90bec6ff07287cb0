import gzip

import pytest

from pipelines.errors import InputError
from pipelines.io.gmt import gene_pathway_index, read_gmt


def test_read_gmt_plain_and_gzip(tmp_path):
    text = "P1\tdesc\tA\tB\tC\n\nP2\t\tC,1.0\tD\tC\nP3\tnone\tZ\n"
    (tmp_path / "s.gmt").write_text(text)
    with gzip.open(tmp_path / "s.gmt.gz", "wt") as fh:
        fh.write(text)
    for name in ("s.gmt", "s.gmt.gz"):
        sets = read_gmt(tmp_path / name)
        assert sets == {"P1": ["A", "B", "C"], "P2": ["C", "D"], "P3": ["Z"]}
    gp, names = gene_pathway_index(["A", "C", "D", "E"], sets)
    assert names == ["P1", "P2"]  # P3 has no cohort gene
    assert gp == [[0], [0, 1], [1], []]


def test_gmt_errors(tmp_path):
    (tmp_path / "dup.gmt").write_text("P1\td\tA\nP1\td\tB\n")
    with pytest.raises(InputError, match=r"dup.gmt:2: gene set 'P1' appears twice"):
        read_gmt(tmp_path / "dup.gmt")
    (tmp_path / "short.gmt").write_text("P1\n")
    with pytest.raises(InputError, match=r"short.gmt:1"):
        read_gmt(tmp_path / "short.gmt")
    with pytest.raises(InputError, match="not found"):
        read_gmt(tmp_path / "missing.gmt")
