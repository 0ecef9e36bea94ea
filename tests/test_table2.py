"""Table 2 (`featx table --pivot protocol`): cells, best and ≈ marks, footnotes, the four formats, and rows read
once with their source folder."""
from __future__ import annotations

import csv
import dataclasses
import io
import re
from html.parser import HTMLParser

import pytest

from featx.report import merge_results, pivot_table, to_csv, to_html, to_latex, to_markdown, write_results
from tests.cli_helpers import invoke
from tests.report_rows import make_row

PROTOCOLS = [("subject", "subject-level 5-fold", "subject 5-fold", False),
             ("image", "IMAGE-LEVEL 5-fold", "IMAGE-LEVEL 5-fold", True),
             ("prelim", "held-out prelim", "held-out prelim", False)]
NAMES = {"vgg16/fc7 + svm": 0.871, "vgg16/pool5 + logistic": 0.862, "cnn_small/fc + k&n": 0.80}


def rows_of(protocols=PROTOCOLS, names=NAMES):
    """One row per name x protocol, each scoring its own number (name's base + 1 point per protocol index)."""
    return [make_row(name, base + 0.01 * p, protocol=proto, label=label, image_level=il, protocol_short=short,
                     n_folds=1 if proto == "prelim" else 5)
            for p, (proto, label, short, il) in enumerate(protocols) for name, base in names.items()]


def compared(rows, best: str, close: set[str]):
    """``rows`` with the comparison compare_rows would give them: ``best`` the reference of each protocol, the
    rows of ``close`` not distinguishable from it (≈ best), the others below it."""
    out = []
    for r in rows:
        ref = r.name == best
        c = {"metric": "f1_weighted", "reference": best, "chosen_by": "best", "is_reference": ref,
             "delta": 0.0 if ref else -0.01, "ci_low": None if ref else -0.03,
             "ci_high": None if ref else (0.01 if r.name in close else -0.005),
             "close": None if ref else r.name in close, "mark": "≈ best" if r.name in close else None}
        out.append(dataclasses.replace(r, comparison=c))
    return out


def test_pivot_cells_are_the_rows_means_with_their_intervals_and_the_best_in_bold():
    rows = rows_of()
    t = pivot_table(rows)
    assert t.column_keys == ("subject 5-fold", "IMAGE-LEVEL 5-fold", "held-out prelim")
    assert t.row_keys == tuple(NAMES)
    for r in rows:
        cell = t.cell(r.name, r.protocol_short)
        assert (cell.mean, cell.ci_low, cell.ci_high) == (r.mean("f1_weighted"), r.score("f1_weighted").ci_low,
                                                          r.score("f1_weighted").ci_high)
        assert cell.best == (r.name == "vgg16/fc7 + svm") and not cell.close
    md = to_markdown(t)
    line = next(ln for ln in md.splitlines() if ln.startswith("| vgg16/pool5"))
    assert line == "| vgg16/pool5 + logistic | 86.20 (81.2 - 89.2) | 87.20 (82.2 - 90.2) | 88.20 (83.2 - 91.2) |"
    assert "| vgg16/fc7 + svm | **87.10 (82.1 - 90.1)** | **88.10 (83.1 - 91.1)** | **89.10 (84.1 - 92.1)** |" in md


def test_a_protocol_a_row_lacks_is_an_empty_cell():
    rows = [r for r in rows_of() if not (r.name == "cnn_small/fc + k&n" and r.protocol == "prelim")]
    t = pivot_table(rows)
    assert t.cell("cnn_small/fc + k&n", "held-out prelim") is None and t.cell("vgg16/fc7 + svm", "held-out prelim")
    assert "cnn\\_small/fc + k\\&n & 80.00 (75.0--83.0) & 81.00 (76.0--84.0) &  \\\\\n" in to_latex(t)
    assert "| cnn_small/fc + k&n | 80.00 (75.0 - 83.0) | 81.00 (76.0 - 84.0) |  |" in to_markdown(t)


def test_comparison_picks_the_bold_row_and_marks_close_rows():
    rows = compared(rows_of(), best="vgg16/pool5 + logistic", close={"vgg16/fc7 + svm"})
    t = pivot_table(rows)  # the reference row is bold even where another mean is higher
    for column in t.column_keys:
        assert t.cell("vgg16/pool5 + logistic", column).best and not t.cell("vgg16/fc7 + svm", column).best
        assert t.cell("vgg16/fc7 + svm", column).close and not t.cell("cnn_small/fc + k&n", column).close
    md = to_markdown(t)
    assert "| vgg16/fc7 + svm | 87.10 (82.1 - 90.1) ≈ |" in md and "**86.20 (81.2 - 89.2)**" in md
    assert "87.10 (82.1--90.1) $\\approx$" in to_latex(t)
    # compared on another metric: no ≈, the best mean is bold
    t = pivot_table(rows, metric="accuracy")
    assert t.cell("vgg16/fc7 + svm", "subject 5-fold").best and not t.cell("vgg16/fc7 + svm", "subject 5-fold").close


def test_marks_are_footnotes_on_the_column_row_or_cell_that_carries_them():
    rows = rows_of()
    rows[0] = dataclasses.replace(rows[0], weights_provenance="unknown")     # vgg16/fc7 + svm, subject only
    rows = [dataclasses.replace(r, optimistic=True) if r.name == "cnn_small/fc + k&n" else r for r in rows]
    assert pivot_table(rows_of()).column_notes == ((), ("a",), ())  # every cell image-level: on the header
    t = pivot_table(rows)
    marks = {mark: label for label, mark, _ in t.footnotes}
    assert set(marks) == {"IMAGE-LEVEL", "OPTIMISTIC", "weights of unknown provenance"}
    assert t.column_notes[1] == ()  # the optimistic row's image-level cell says OPTIMISTIC: on the others' cells
    assert t.cell("vgg16/pool5 + logistic", "IMAGE-LEVEL 5-fold").notes == (marks["IMAGE-LEVEL"],)
    assert t.row_notes[2] == (marks["OPTIMISTIC"],)                # every cell of the optimistic row: on the row
    assert t.cell("vgg16/fc7 + svm", "subject 5-fold").notes == (marks["weights of unknown provenance"],)
    md = to_markdown(t)
    assert f"| cnn_small/fc + k&n<sup>{marks['OPTIMISTIC']}</sup> |" in md
    assert f"<sup>{marks['OPTIMISTIC']}</sup> OPTIMISTIC rows test on images" in md
    # the optimistic row is never the best of a column while an honest row is there
    assert not any(c.best for c in t.cells[2])


def test_latex_escapes_and_every_line_of_the_tabular_has_its_columns():
    rows = rows_of(names={"a_b/fc + 50%": 0.8, "c&d/#1 + svm": 0.7})
    tex = to_latex(pivot_table(rows))
    assert r"a\_b/fc + 50\%" in tex and r"c\&d/\#1 + svm" in tex
    body = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")]
    spec = re.match(r"\\begin\{tabular\}\{([lr]+)\}", body).group(1)
    assert spec == "l" + "r" * 3
    rows_tex = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(rows_tex) == 1 + 2
    for ln in rows_tex:  # escaped & are not separators
        assert len(re.findall(r"(?<!\\)&", ln)) == len(spec) - 1
    assert body.count(r"\toprule") == body.count(r"\midrule") == 1 and tex.count(r"\bottomrule") == 1


def test_csv_parses_back_to_the_rows_numbers():
    rows = rows_of()
    table = list(csv.DictReader(io.StringIO(to_csv(pivot_table(rows)))))
    assert [t["Model"] for t in table] == list(NAMES)
    for r in rows:
        line = next(t for t in table if t["Model"] == r.name)
        s, col = r.score("f1_weighted"), r.protocol_short
        assert float(line[f"{col} (%)"]) == pytest.approx(100 * s.mean, abs=0.005)
        assert float(line[f"{col} 95% CI low"]) == pytest.approx(100 * s.ci_low, abs=0.005)
        assert float(line[f"{col} 95% CI high"]) == pytest.approx(100 * s.ci_high, abs=0.005)
        notes = line[f"{col} notes"].split("; ")
        assert ("best" in notes) == (r.name == "vgg16/fc7 + svm") and ("IMAGE-LEVEL" in notes) == r.image_level


class _Checker(HTMLParser):
    """Fails on a tag closed out of order; counts cells per row."""

    def __init__(self):
        super().__init__()
        self.stack, self.rows = [], []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        if tag == "tr":
            self.rows.append(0)
        if tag in ("td", "th"):
            self.rows[-1] += int(dict(attrs).get("colspan", 1))

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes {self.stack}"


def test_html_is_one_well_formed_table():
    rows = compared(rows_of(names={"<b>/fc + svm": 0.8, "x/fc + knn": 0.7}), best="<b>/fc + svm", close=set())
    text = to_html(pivot_table(rows))
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.stack == [] and set(checker.rows) == {4}
    assert text.startswith('<table class="featx-table2">') and text.rstrip().endswith("</table>")
    assert "<strong>80.00 (75.0 - 83.0)</strong>" in text and "&lt;b&gt;/fc + svm" in text


def test_the_same_folder_twice_or_a_copy_of_its_rows_shows_each_row_once(tmp_path):
    rows = rows_of()
    write_results(rows, tmp_path / "res" / "compare", plots=False)
    write_results(rows[:3], tmp_path / "res" / "classify", plots=False)  # the same rows run again elsewhere
    for sources in ([tmp_path / "res", tmp_path / "res"], [tmp_path / "res", tmp_path / "res" / "compare"]):
        merged = merge_results(sources)
        assert [(r.name, r.protocol) for r in merged.rows] == [(r.name, r.protocol) for r in rows[:3]] + [
            (r.name, r.protocol) for r in rows[3:]]
    assert merged.sources == ["classify"] * 3 + ["compare"] * 6
    t = pivot_table(merged.as_read, sources=merged.sources)
    assert t.row_keys == tuple(NAMES) * 2 and t.sources == ("classify",) * 3 + ("compare",) * 3


def test_two_folders_give_a_source_column_in_every_format(tmp_path):
    rows = rows_of()
    write_results(rows[:3], tmp_path / "a", plots=False)
    write_results(compared(rows[3:], "vgg16/fc7 + svm", set()), tmp_path / "b", plots=False)
    merged = merge_results([tmp_path / "a", tmp_path / "b"])
    t = pivot_table(merged.as_read, sources=merged.sources)
    assert t.sources == ("a",) * 3 + ("b",) * 3
    assert to_markdown(t).splitlines()[0].startswith("| Model | Source |")
    assert next(csv.reader(io.StringIO(to_csv(t))))[:2] == ["Model", "Source"]
    assert "Model & Source &" in to_latex(t) and "<th>Source</th>" in to_html(t)


@pytest.mark.slow
def test_featx_table_pivot_writes_each_format(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    write_results(rows_of(), tmp_path / "res", plots=False)
    result = invoke("table", tmp_path / "res", tmp_path / "res", "--pivot", "protocol", "--format", "csv")[0]
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.output)))
    assert [t["Model"] for t in table] == list(NAMES) and table[0]["subject 5-fold (%)"] == "87.10"
    result, text = invoke("table", tmp_path / "res", "--pivot", "protocol", "--out", tmp_path / "t2.tex")
    assert result.exit_code == 0 and (tmp_path / "t2.tex").read_text().startswith("\\begin{tabular}{lrrr}")
    result, text = invoke("table", tmp_path / "res", "--pivot", "protocol")
    assert result.exit_code == 0 and "vgg16/fc7 + svm 87.10 (82.1 - 90.1) 88.10 (83.1 - 91.1)" in text
    result, text = invoke("table", tmp_path / "res", "--format", "md")
    assert result.exit_code == 1 and "error: --format md writes Table 2: add --pivot protocol" in text
    result, text = invoke("table", tmp_path / "res", "--pivot", "protocol", "--format", "docx")
    assert result.exit_code == 1 and "--format docx: not a table format; choose one of md, latex, csv, html" in text


def test_featx_table_of_two_folders_shows_the_source_column(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    write_results(rows_of()[:3], tmp_path / "a", plots=False)
    write_results(rows_of()[3:], tmp_path / "b", plots=False)
    result, text = invoke("table", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 0 and "Model Source Protocol" in text
    assert "vgg16/fc7 + svm a subject 5-fold 87.10" in text and "vgg16/fc7 + svm b * IMAGE-LEVEL" in text


def test_the_html_report_holds_table_2():
    from featx.report.html import render_html  # deferred: only this test draws a report

    rows = rows_of()
    page = render_html(rows, title="t")
    assert '<section id="table2"' in page and 'href="#table2"' in page  # a section, in the contents
    section = page.split('<section id="table2"', 1)[1].split("</section>", 1)[0]
    assert section.count('class="featx-table2"') == 1 and section.count("<strong>") == len(PROTOCOLS)
