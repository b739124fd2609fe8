"""`alignbench report --html`: the page model (which runs, which images, which thumbnails), its
colours, and the output directory's rules, on synthetic stores (no model, no torch)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alignbench._utils.class_names import imagenet_class_names
from alignbench.cli.app import app
from alignbench.html_report import MANIFEST, write_html_report
from alignbench.html_report.build import build_page, missing_thumbnails, read_report_data
from alignbench.html_report.gallery import pick_images
from alignbench.html_report.painter import COLOUR_MAP
from alignbench.html_report.render import render_page
from alignbench.store import open_store
from alignbench.store import queries as q
from alignbench.testing.synthetic import add_run, add_thumbnails, image_id

runner = CliRunner()
N = 40
K = 3


def _values(seed: int, n: int = N) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(-0.5, 0.9, n), 6)


@pytest.fixture()
def store_url(tmp_path: Path) -> str:
    """resnet50 baseline on 40 images and DCLS on the first 36 (one skipped), convnext_tiny baseline
    alone, and the centre-bias run; no thumbnails yet."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    dcls = _values(2, 36)
    dcls[5] = np.nan
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=_values(1), family="resnet", param_count=25_557_032)
        add_run(store, model="resnet50", dcls=True, values=dcls, family="resnet", param_count=25_000_000)
        add_run(store, model="convnext_tiny", dcls=False, values=_values(3), family="convnext", param_count=28_589_128)
        add_run(store, model="centre-bias", dcls=False, values=_values(4), method="centre-bias", params={"sigma_frac": 0.25})
    return url


def _data(url: str, **options):
    with open_store(url, create=False) as store, store.session() as session:
        return read_report_data(session, gallery=K, **options)


def test_pick_images_best_worst_random_are_disjoint_and_seeded() -> None:
    index = np.arange(10, 30)
    value = np.array([0.5, 0.1, 0.9, 0.9, -0.2, 0.3, 0.0, 0.7, -0.5, 0.2, 0.6, 0.4, -0.1, 0.8, 0.05, -0.3, 0.15, 0.35, 0.45, 0.55])
    picks = pick_images(index, value, 3, seed=7)
    assert picks.best == (12, 13, 23)  # 0.9, 0.9 (lower index first), 0.8
    assert picks.worst == (18, 25, 14)  # -0.5, -0.3, -0.2
    assert len(picks.random) == 3 and not set(picks.random) & set(picks.best + picks.worst)
    assert picks.random == pick_images(index, value, 3, seed=7).random == tuple(sorted(picks.random))
    assert {pick_images(index, value, 3, seed=s).random for s in range(6)} != {picks.random}  # the seed draws
    lower = pick_images(index, value, 3, seed=7, higher_is_better=False)
    assert lower.best == (18, 25, 14) and lower.worst == (12, 13, 23)
    few = pick_images(index[:5], value[:5], 3)
    assert few.best == (12, 13, 10) and few.worst == (14, 11) and few.random == ()  # every image once


def test_galleries_one_per_comparison_and_one_per_run_in_none(store_url: str) -> None:
    data = _data(store_url)
    runs = {run.run_id: run for run in data.stored.runs}
    assert len(runs) == 4  # three model runs and the centre-bias reference
    assert [plan.labels for plan in data.plans] == [("baseline", "DCLS"), ("baseline",)]
    comparison, single = data.plans
    baseline, dcls = comparison.run_ids
    assert (runs[baseline].view.model, runs[dcls].view.dcls) == ("resnet50", True)
    assert runs[comparison.reference_run_id].is_reference and comparison.reference_sigma_frac == 0.25
    # Δ = DCLS − baseline on the 35 images both scored, computed here independently
    b, d = _values(1), _values(2, 36)
    both = [i for i in range(36) if i != 5]
    delta = {i: d[i] - b[i] for i in both}
    by_delta = sorted(both, key=lambda i: (-delta[i], i))
    best, worst, random = comparison.sections
    assert [image.index for image in best.images] == by_delta[:K]
    assert [image.index for image in worst.images] == sorted(both, key=lambda i: (delta[i], i))[:K]
    assert len(random.images) == K and all(image.index in both for image in random.images)
    assert not {i.index for i in random.images} & {i.index for i in best.images + worst.images}
    for image in comparison.images:  # each image carries its stored row from both runs and the reference
        assert set(image.rows) == {baseline, dcls, comparison.reference_run_id}
        assert image.rows[baseline].value == b[image.index] and image.image_id() == image_id(image.index)  # stored as given
    assert runs[single.run_ids[0]].view.model == "convnext_tiny"
    c = _values(3)
    assert [image.index for image in single.sections[0].images] == sorted(range(N), key=lambda i: (-c[i], i))[:K]
    assert single.sections[0].title == "best spearman" and single.sections[1].title == "worst spearman"
    assert [p.run_ids for p in _data(store_url, seed=5).plans] == [p.run_ids for p in data.plans]
    assert _data(store_url, seed=5).plans[0].sections[2] != random  # another seed, another draw


def test_the_page_uses_the_stored_thumbnails_and_says_where_they_are_missing(store_url: str) -> None:
    data = _data(store_url)
    with open_store(store_url, create=False) as store:
        with store.session() as session:
            missing = missing_thumbnails(session, data)
        comparison, single = data.plans
        # every run of a gallery needs every image of it; the reference run needs none (its map is drawn)
        assert missing == {
            comparison.run_ids[0]: {i.image_id() for i in comparison.images},
            comparison.run_ids[1]: {i.image_id() for i in comparison.images},
            single.run_ids[0]: {i.image_id() for i in single.images},
        }
        add_thumbnails(store, {run_id: ids for run_id, ids in missing.items() if run_id != single.run_ids[0]})
        with store.session() as session:
            assert set(missing_thumbnails(session, data)) == {single.run_ids[0]}
            page = build_page(session, data, unavailable={single.run_ids[0]: "the weights of convnext_tiny are not on this machine"})
    assert [int(row[0].text) for row in page.runs.rows] == [run.run_id for run in data.stored.runs]
    assert page.runs.row_classes == ("", "", "", "reference")
    assert [gallery.anchor for gallery in page.galleries] == [plan.anchor for plan in data.plans]
    shown, unavailable = page.galleries
    assert shown.columns == ("image", "human map", "baseline", "DCLS", "centre bias")  # ClickMe: human click maps
    for section, planned in zip(shown.sections, comparison.sections):
        assert [row.image_id for row in section.rows] == [image.image_id() for image in planned.images]
        for row in section.rows:
            assert row.picture.source == (comparison.run_ids[0], row.image_id, "image") and row.picture.src in page.assets
            human, base, dcls, centre = row.maps
            assert human.plain.source == (comparison.run_ids[0], row.image_id, "reference")
            assert base.plain.source == (comparison.run_ids[0], row.image_id, "model")
            assert dcls.plain.source == (comparison.run_ids[1], row.image_id, "model")
            assert all(m.plain.src in page.assets for m in row.maps)
            assert centre.plain.source is None and centre.score.startswith("ρ = ")
            assert row.delta.startswith("Δ = ") and base.score.startswith("ρ = ")
    assert unavailable.missing == (f"run {single.run_ids[0]} (convnext_tiny): the weights of convnext_tiny are not on this machine",)
    row = unavailable.sections[0].rows[0]
    assert row.picture.src is None and row.maps[1].plain.src is None
    assert "not on this machine" in row.maps[1].plain.alt
    html = render_page(page)
    assert html.count('class="gallery-row"') == sum(len(s.rows) for g in page.galleries for s in g.sections)
    assert "not on this machine" in html


def test_model_maps_of_a_row_share_one_colour_scale(tmp_path: Path) -> None:
    """Baseline map 1.0 everywhere on [0, 1], DCLS 2.0 everywhere on [0, 2]: on the row's shared scale
    [0, 2] the baseline is drawn at the middle colour, DCLS at the top; the human map at its own top."""
    from matplotlib import colormaps

    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        base = add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2])
        dcls = add_run(store, model="resnet50", dcls=True, values=[0.3, 0.1])
        white = io.BytesIO()
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(white, format="PNG")
        grey = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(grey, format="PNG")
        rows = []
        for run_id, high in ((base, 1.0), (dcls, 2.0)):
            for index in (0, 1):
                rows += [
                    {"run_id": run_id, "image_id": image_id(index), "kind": "image", "png": grey.getvalue(), "vmin": None, "vmax": None},
                    {"run_id": run_id, "image_id": image_id(index), "kind": "reference", "png": white.getvalue(), "vmin": 0.0, "vmax": 5.0},
                    {"run_id": run_id, "image_id": image_id(index), "kind": "model", "png": white.getvalue(), "vmin": 0.0, "vmax": high},
                ]
        with store.session(write=True) as session:
            q.insert_thumbnails(session, rows)
            session.commit()
        data = _data(url)
        with store.session() as session:
            page = build_page(session, data)
    lut = np.rint(colormaps[COLOUR_MAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)

    def pixel(src: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(page.assets[src])).convert("RGB"))[4, 4]

    row = page.galleries[0].sections[0].rows[0]
    human, baseline, dcls_map, _ = row.maps
    assert (pixel(baseline.plain.src) == lut[128]).all() and (pixel(dcls_map.plain.src) == lut[255]).all()
    assert (pixel(human.plain.src) == lut[255]).all()
    assert row.scale == "model maps: 0 to 2"
    # overlays: the map over the picture at explain's weight (the browser test checks the pixels)
    html = render_page(page)
    assert f'<img src="{row.picture.src}" alt="" class="backdrop"><img src="{baseline.plain.src}"' in html
    assert ".overlay img.over { opacity: 0.5; }" in html


def test_output_directory_rules(store_url: str, tmp_path: Path) -> None:
    with open_store(store_url, create=False) as store, store.session() as session:
        add_thumbnails(store, missing_thumbnails(session, _data(store_url)))
    out = tmp_path / "report"
    first = runner.invoke(app, ["report", "--db", store_url, "--html", str(out), "--gallery", str(K)])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == str((out / "index.html").resolve())
    written = set(json.loads((out / MANIFEST).read_text())["files"])
    assert "index.html" in written and all((out / name).is_file() for name in written)
    # the same directory again: only its own files are there, so it is rewritten; a gallery of other
    # images leaves stale pictures behind, which are removed
    again = write_html_report(out, store_url, gallery=1)
    assert again.index == out / "index.html"
    now = set(json.loads((out / MANIFEST).read_text())["files"])
    assert now < written and all(not (out / name).exists() for name in written - now)
    # a file the report did not write: refused, then written beside with --force and kept
    (out / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["report", "--db", store_url, "--html", str(out)])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "notes.txt" in refused.stderr
    assert "Traceback" not in refused.output
    forced = runner.invoke(app, ["report", "--db", store_url, "--html", str(out), "--force"])
    assert forced.exit_code == 0 and (out / "notes.txt").read_text() == "mine"
    foreign_index = tmp_path / "other"
    foreign_index.mkdir()
    (foreign_index / "index.html").write_text("someone's page")
    clash = runner.invoke(app, ["report", "--db", store_url, "--html", str(foreign_index), "--force"])
    assert clash.exit_code == 2 and "index.html" in clash.stderr and (foreign_index / "index.html").read_text() == "someone's page"
    # a manifest that names files outside the directory never makes the report touch them
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    listed = json.loads((out / MANIFEST).read_text())["files"]
    (out / MANIFEST).write_text(json.dumps({"files": [*listed, "../victim.txt", str(victim)]}))
    assert runner.invoke(app, ["report", "--db", store_url, "--html", str(out), "--force"]).exit_code == 0
    assert victim.read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in (a_file, a_file / "sub"):
        result = runner.invoke(app, ["report", "--db", store_url, "--html", str(bad)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and str(a_file) in result.stderr
    assert runner.invoke(app, ["report", "--db", store_url, "--html", str(tmp_path / "x"), "--gallery", "-1"]).exit_code == 2
    assert runner.invoke(app, ["report", "--db", store_url, "--html", str(tmp_path / "x"), "--json"]).exit_code == 2
    unknown = runner.invoke(app, ["report", "--db", store_url, "--html", str(tmp_path / "y"), "--run", "99"])
    assert unknown.exit_code == 2 and "no run 99" in unknown.stderr and not (tmp_path / "y" / "index.html").exists()


def test_empty_or_missing_store_gives_a_page_that_says_so(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path / 'empty.db'}").close()
    for name in ("none.db", "empty.db"):
        url = f"sqlite:///{tmp_path / name}"
        out = tmp_path / f"report-{name}"
        result = runner.invoke(app, ["report", "--db", url, "--html", str(out)])
        assert result.exit_code == 0, result.output
        page = (out / "index.html").read_text()
        assert "no runs stored yet" in page and "alignbench score" in page
    assert not (tmp_path / "none.db").exists()  # a report never creates a store


def test_run_page_lists_every_image(store_url: str, tmp_path: Path) -> None:
    data = _data(store_url)
    run_id = data.plans[0].run_ids[1]  # the DCLS run: 36 images, one skipped
    out = tmp_path / "run"
    result = write_html_report(out, store_url, run_id=run_id, gallery=2)
    html = (out / "index.html").read_text()
    start = html.index('<script type="application/json" id="image-rows">') + len('<script type="application/json" id="image-rows">')
    rows = json.loads(html[start : html.index("</script>", start)])
    assert [row[0] for row in rows] == list(range(36)) and rows[5][5] is None and rows[5][6] == "constant map"
    assert rows[0][2] == imagenet_class_names()[0]  # the synthetic targets are index % 1000 on ImageNet-labelled ClickMe
    assert result.n_runs == 1 and result.n_galleries == 1 and f"Run {run_id}" in html


def test_values_are_escaped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        add_run(
            store, model="<script>alert(1)</script>", dcls=False, values=[0.1, 0.2], dataset="folder", dataset_fingerprint="f", ceiling=None
        )
    out = tmp_path / "r"
    write_html_report(out, url, gallery=0)
    html = (out / "index.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_imagenet_names_read_without_timm_equal_timms() -> None:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    assert list(imagenet_class_names()) == [info.index_to_description(i) for i in range(1000)]


def test_a_thumbnail_is_stored_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        run_id = add_run(store, model="resnet50", dcls=False, values=[0.1])
        first = {"run_id": run_id, "image_id": image_id(0), "kind": "model", "png": b"first", "vmin": 0.0, "vmax": 1.0}
        with store.session(write=True) as session:
            assert q.insert_thumbnails(session, [first]) == 1
            assert q.insert_thumbnails(session, [{**first, "png": b"second"}]) == 0  # a concurrent report's copy is kept
            session.commit()
        with store.session() as session:
            assert q.stored_thumbnails(session, [run_id]) == {(run_id, image_id(0), "model")}
            assert q.read_thumbnails(session, run_id, [image_id(0)])[(image_id(0), "model")].png == b"first"


def test_a_second_metric_gets_a_column_of_means(tmp_path: Path) -> None:
    """Runs that stored more than the report's metric show each other metric's mean (one grouped query)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.3], metrics=("spearman", "average-drop"))
    data = _data(url)
    with open_store(url, create=False) as store, store.session() as session:
        page = build_page(session, data)
    assert "mean spearman" in page.runs.columns and "mean average-drop" in page.runs.columns
    assert page.runs.rows[0][page.runs.columns.index("mean spearman")].text == "0.2000"
    assert page.runs.rows[0][page.runs.columns.index("mean average-drop")].text == "—"  # no row stored a value


def _small_store(tmp_path: Path) -> str:
    from alignbench.testing.synthetic import add_run

    url = f"sqlite:///{tmp_path / 'small.db'}"
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=[0.1, 0.2, 0.3])
        add_run(store, model="resnet50", dcls=True, values=[0.2, 0.3, 0.5])
    return url


def test_names_added_to_the_manifest_are_never_deleted(tmp_path: Path) -> None:
    """The probe: the report trusted its manifest, so a name added to .alignbench-report.json was deleted."""
    url = _small_store(tmp_path)
    out = tmp_path / "report"
    assert runner.invoke(app, ["report", "--db", url, "--html", str(out), "--gallery", "0"]).exit_code == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["files"]) >= {"index.html"}
    (out / "thesis.tex").write_text("three years of work")
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "mine.png").write_bytes(b"not the report's")
    manifest["files"]["thesis.tex"] = manifest["files"]["index.html"]  # a digest, but not of its bytes
    manifest["files"]["figures/mine.png"] = "0" * 64
    (out / MANIFEST).write_text(json.dumps(manifest))
    refused = runner.invoke(app, ["report", "--db", url, "--html", str(out), "--gallery", "0"])
    assert refused.exit_code == 2 and "thesis.tex" in refused.stderr  # not the report's: refused without --force
    forced = runner.invoke(app, ["report", "--db", url, "--html", str(out), "--gallery", "0", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "thesis.tex").read_text() == "three years of work"
    assert (out / "figures" / "mine.png").read_bytes() == b"not the report's"
    assert "thesis.tex" not in json.loads((out / MANIFEST).read_text())["files"]


def test_a_foreign_index_is_refused_without_suggesting_force(tmp_path: Path) -> None:
    """The probe: `report --html DIR` suggested --force, then --force refused the foreign index.html."""
    url = _small_store(tmp_path)
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("someone's page")
    (out / "style.css").write_text("theirs")
    for extra in ([], ["--force"]):
        result = runner.invoke(app, ["report", "--db", url, "--html", str(out), "--gallery", "0", *extra])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert "index.html" in result.stderr and "--force" not in result.stderr
    assert (out / "index.html").read_text() == "someone's page" and sorted(p.name for p in out.iterdir()) == ["index.html", "style.css"]


def test_trained_vs_parent_galleries_are_labelled_parent_and_trained_with_the_tag(tmp_path: Path) -> None:
    """A trained model gets a gallery against its parent, labelled "parent" / "trained · TAG" (as
    DCLS-vs-baseline galleries are labelled baseline / DCLS), and a table of its own."""
    from alignbench.html_report.build import build_page
    from alignbench.store import queries as q
    from alignbench.testing.synthetic import add_run, model_identity

    url = f"sqlite:///{tmp_path / 'trained.db'}"
    rng = np.random.default_rng(3)
    base = rng.uniform(0.0, 0.8, 30)
    with open_store(url) as store:
        add_run(store, model="resnet50", dcls=False, values=base)
        add_run(store, model="resnet50", dcls=True, values=base + 0.01)
        add_run(store, model="resnet50", dcls=True, values=base + 0.05, checkpoint="pos")  # trained from the DCLS model
        add_run(store, model="resnet50", dcls=False, values=base - 0.02, checkpoint="ft")  # trained from the dense model
        with store.session(write=True) as session:
            for checkpoint, dcls, tag in (("pos", True, "r50-pos"), ("ft", False, "r50-ft")):
                parent = q.find_model(session, model_identity("resnet50", dcls=dcls).fingerprint)
                row = q.record_trained_model(
                    session, model_identity("resnet50", dcls=dcls, checkpoint=checkpoint), origin="finetune", parent=parent, lineage={}
                )
                row.tag = tag
                session.add(row)
            session.commit()
    with open_store(url, create=False) as store, store.session() as session:
        data = read_report_data(session, gallery=2)
        page = build_page(session, data)
    labels = {plan.run_ids: plan.labels for plan in data.plans}
    assert labels[(1, 2)] == ("baseline", "DCLS")
    assert labels[(1, 3)] == ("baseline", "DCLS · r50-pos")  # the trained DCLS variant against the architecture's baseline
    assert labels[(2, 3)] == ("parent", "trained · r50-pos")
    assert labels[(1, 4)] == ("parent", "trained · r50-ft")
    titles = [table.title for table in page.comparisons]
    assert any(title.startswith("DCLS vs baseline") for title in titles)
    assert any(title.startswith("Trained vs parent") for title in titles)
    html = render_page(page)
    assert "trained · r50-ft" in html and "parent" in html


def test_the_colour_map_is_matplotlibs_jet_without_importing_it() -> None:
    from matplotlib import colormaps

    from alignbench.html_report.painter import jet_lut

    expected = np.rint(colormaps[COLOUR_MAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert COLOUR_MAP == "jet" and np.array_equal(jet_lut(), expected)


@pytest.mark.parametrize("scale", [(0.0, 1.0, 0.0, 1.0), (0.2, 0.7, 0.0, 2.0), (-1.0, 3.0, -0.5, 0.5), (0.5, 0.5, 0.5, 0.5)])
def test_a_thumbnail_coloured_by_its_palette_is_the_decoded_map_coloured(scale: tuple[float, float, float, float]) -> None:
    """Giving the stored grey PNG a palette paints every pixel as decoding, rescaling and colouring it did."""
    from types import SimpleNamespace

    from alignbench.html_report.painter import Painter, thumbnail_values, unit_range

    vmin, vmax, low, high = scale
    grey = np.random.default_rng(1).integers(0, 256, (37, 53), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="PNG")
    png = buffer.getvalue()
    painter = Painter({})
    fast = painter.colour_thumbnail(png, vmin, vmax, low, high)
    slow = painter.colour(unit_range(thumbnail_values(SimpleNamespace(png=png, vmin=vmin, vmax=vmax)), low, high))

    def rgb(name: str) -> np.ndarray:
        with Image.open(io.BytesIO(painter.assets[name])) as image:
            return np.asarray(image.convert("RGB"))

    assert np.array_equal(rgb(fast), rgb(slow))


def test_the_figures_are_svg_drawn_without_matplotlib(store_url: str, tmp_path: Path) -> None:
    """The HTML report's figures (SVG from the figure data): every point inside its axes, one ridge per
    run, and no matplotlib imported to draw a page (it was most of report --html's time)."""
    import subprocess
    import sys
    import xml.etree.ElementTree as ElementTree

    from alignbench.analysis.plots import figure_data
    from alignbench.html_report.charts import figure_charts
    from alignbench.html_report.render import render_chart

    data = _data(store_url)
    charts = {chart.name: chart for chart in figure_charts(data.report)}
    figures = figure_data(data.report)
    assert set(charts) >= {"fig2_dcls_vs_baseline", "fig3_explainers", "histograms"}
    svg = "{http://www.w3.org/2000/svg}"
    for name, chart in charts.items():
        root = ElementTree.fromstring(render_chart(chart))  # well-formed, escaped
        for circle in root.iter(f"{svg}circle"):
            if circle.find(f"{svg}title") is not None:  # a data point (legend dots have no title)
                x, y = float(circle.get("cx")), float(circle.get("cy"))
                assert chart.left <= x <= chart.right and chart.top <= y <= chart.bottom, name
    scatter = ElementTree.fromstring(render_chart(charts["fig2_dcls_vs_baseline"]))
    points = [c for c in scatter.iter(f"{svg}circle") if c.find(f"{svg}title") is not None]
    assert len(points) == sum(len(s.models) for s in figures.scatter)
    ridges = ElementTree.fromstring(render_chart(charts["histograms"])).findall(f"{svg}polygon")
    assert len(ridges) == len(figures.histograms)
    out = tmp_path / "report"
    code = (
        "import sys; from alignbench.html_report import write_html_report; "
        f"write_html_report({str(out)!r}, {store_url!r}, gallery=0); print('matplotlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{name}.svg" for name in charts)


@pytest.mark.parametrize("k", [1, 3, 8, 30])
def test_pick_images_is_what_sorting_every_image_gives(k: int) -> None:
    """The galleries' choice, computed on the k-th smallest candidates, is the full lexsort's (ties and
    NaN included), so a store gives the galleries it always gave and its stored thumbnails are reused."""
    rng = np.random.default_rng(k)
    for higher_is_better in (True, False):
        index = np.sort(rng.choice(100_000, 2_000, replace=False))
        value = np.round(rng.normal(0, 1, index.size), 1)  # many ties
        value[rng.random(index.size) < 0.01] = np.nan
        sign = -1.0 if higher_is_better else 1.0
        order = np.lexsort((index, sign * value))
        best, rest = order[:k], order[k:]
        worst = rest[np.lexsort((index[rest], -sign * value[rest]))][:k]
        remaining = np.setdiff1d(rest, worst, assume_unique=True)
        chosen = np.random.default_rng(5).choice(remaining, size=k, replace=False)
        picks = pick_images(index, value, k, seed=5, higher_is_better=higher_is_better)
        assert picks.best == tuple(int(i) for i in index[best])
        assert picks.worst == tuple(int(i) for i in index[worst])
        assert picks.random == tuple(sorted(int(i) for i in index[chosen]))
