"""bench paper / bench reproduce: the papers' tables from fixture records, in the
papers' layouts, with bold / underline / significance marks in the right cells."""

import json

import pytest

from bench.api.errors import BenchError
from bench.tools.paper import build_paper, load_paper, reproduce, write_paper


def write_record(
    root,
    suite,
    dataset,
    method,
    seed,
    test,
    preset="smoke",
    config=None,
    sub="",
    chash=None,
    extra=None,
):
    chash = chash or "h" + "".join(str(v) for v in (config or {}).values())
    path = root / sub / suite / dataset / method.replace(":", "-") / chash / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "schema_version": "1.0",
                "status": "ok",
                "suite": suite,
                "preset": preset,
                "dataset": dataset,
                "method": method,
                "seed": seed,
                "config_hash": "h",
                "config": config or {},
                "metrics": {"test": test},
                **(extra or {}),
            }
        )
    )


@pytest.fixture
def results(tmp_path):
    """RetinaMNIST: DiffMIC-v2 best, DiffMIC second (~0.01 below), ResNet-18 far below, 3 seeds."""
    for seed, jitter in enumerate((0.0, 0.004, -0.003)):
        write_record(
            tmp_path,
            "classification",
            "retinamnist",
            "diffmic_v2",
            seed,
            {"accuracy": 0.60 + jitter, "f1_macro": 0.40 + jitter},
        )
        write_record(
            tmp_path,
            "classification",
            "retinamnist",
            "diffmic",
            seed,
            {"accuracy": 0.59 + jitter * 0.5, "f1_macro": 0.41 + jitter},
        )
        write_record(
            tmp_path,
            "classification",
            "retinamnist",
            "resnet18",
            seed,
            {"accuracy": 0.50 + jitter, "f1_macro": 0.30 + jitter},
        )
    return tmp_path


def table_rows(text, heading):
    block = text.split(heading, 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return {
        line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("|").split(" | ")[1:]]
        for line in block.splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    }


def test_a_paper_table_renders_with_bold_underline_and_marks_in_the_right_cells(results):
    text, pairs = build_paper("diffmic-v2", "I-II", results_dir=results)
    rows = table_rows(text, "### APTOS2019 (ours: retinamnist)")
    header = rows["metric"]  # printed as in the paper: methods across
    assert header[:4] == [
        "ResNet18 (resnet18)",
        "ViT (vit_tiny_patch16_224)",
        "DiffMIC (diffmic)",
        "DiffMIC-v2 (diffmic_v2)",
    ]
    acc = dict(zip(header, rows["Accuracy (ours)"]))
    assert acc["DiffMIC-v2 (diffmic_v2)"] == "**0.600 ± 0.004**"  # best, and the reference: no mark
    assert acc["DiffMIC (diffmic)"].startswith("<u>0.590") and acc["DiffMIC (diffmic)"].endswith(
        r"</u>\*\*\*"
    )
    assert (
        acc["ResNet18 (resnet18)"].endswith(r"\*\*\*")
        and acc["ViT (vit_tiny_patch16_224)"] == "not run"
    )
    assert dict(zip(header, rows["Accuracy (paper)"]))["DiffMIC-v2 (diffmic_v2)"] == "0.871"
    f1 = dict(zip(header, rows["F1-score (ours)"]))
    assert f1["DiffMIC (diffmic)"].startswith("**0.410")  # DiffMIC is best on F1: the bold moves
    assert (
        "RetinaMNIST (DeepDRiD fundus" in text
        and "### PMG2000 (no equivalent dataset here: paper numbers only)" in text
    )
    ablation, _ = build_paper("diffmic-v2", "IV", results_dir=results)
    c1 = table_rows(ablation, "### PMG2000 (ours: retinamnist)")[
        "C1 (no diffusion = ResNet18) (diffmic_v2_c1)"
    ]
    assert c1 == ["0.879", "not run", "0.881", "not run"]  # said, not left out
    empty, _ = build_paper("odm", results_dir=results)
    assert "_No run of ours yet for this table on retinamnist (suite `generation`" in empty
    verdicts = {
        (p["method"], p["metric"]): p["verdict"]
        for p in reproduce("diffmic-v2", results_dir=results)
    }
    assert (
        verdicts[("DiffMIC-v2", "Accuracy")] == "differs, other dataset"
    )  # 0.600 vs 0.871 on a stand-in dataset


def test_sweep_tables_read_sweep_records_and_plot(results, tmp_path):
    empty, _ = build_paper("diffmic-v2", "Fig4", results_dir=results, out_dir=tmp_path)
    assert "_No sweep of N_p alone" in empty and "| N_p |" not in empty  # no table of no values
    for n_p, acc in ((1, 0.55), (2, 0.58), (3, 0.57)):
        write_record(
            results,
            "s",
            "retinamnist",
            "diffmic_v2",
            0,
            {"accuracy": acc, "f1_macro": acc - 0.2},
            sub="sweeps",
            config={"num_points": n_p, "num_rois": 6, "latent_dim": 128},
        )
    text, _ = build_paper("diffmic-v2", "Fig4", results_dir=results, out_dir=tmp_path)
    rows = table_rows(text, "## Table Fig4")
    assert rows["N_p"] == ["1", "2", "3"] and rows["Accuracy (ours)"] == [
        "0.550 (n=1)",
        "0.580 (n=1)",
        "0.570 (n=1)",
    ]  # single trials: none is bold
    assert (tmp_path / "paper-diffmic_v2-Fig4-N_p.png").is_file()
    k_table, _ = build_paper("diffmic-v2", "V", results_dir=results)
    assert "| K | 2 | 4 | 6 | 8 | 10 |" in k_table and "0.935" in k_table  # the paper's rows stay
    assert (
        "_No sweep of K alone" in k_table
    )  # the N_p study's records (all at K = 6) are not a K sweep
    for k, acc in ((2, 0.52), (6, 0.61)):
        write_record(
            results,
            "k",
            "retinamnist",
            "diffmic_v2",
            0,
            {"accuracy": acc, "f1_macro": acc - 0.2},
            sub="sweeps",
            config={"num_points": 2, "num_rois": k, "latent_dim": 128},
        )
    v_table = build_paper("diffmic-v2", "V", results_dir=results)[0]
    h_note = next(
        p["not_run"]
        for t in load_paper("diffmic-v2")["tables"]
        if t["id"] == "V"
        for p in t["parameters"]
        if p["name"] == "H"
    )
    assert f"_H: {h_note}_" in v_table and "No sweep of H" not in v_table
    k_table = v_table.split("| H |")[0]
    rows = table_rows(k_table, "## Table V")
    assert rows["Accuracy (ours)"][:3] == [
        "0.520 (n=1)",
        "—",
        "0.610 (n=1)",
    ]  # K = 6: the K study's trial only


def test_unknown_papers_and_tables_are_named(results, tmp_path):
    with pytest.raises(BenchError, match="did you mean 'dcube'"):
        build_paper("dcub", results_dir=results)
    with pytest.raises(BenchError, match="has no table 'XI'"):
        build_paper("odm", "XI", results_dir=results)
    path = write_paper("survey", results_dir=results, out_dir=tmp_path)
    assert "## Table 12" in path.read_text() and "## Table 9" in path.read_text()


def test_rows_with_the_same_label_keep_their_own_numbers_and_ties_share_emphasis(tmp_path):
    """D-Cube Table III has two "+ Syn" rows (ResNet and ViT): each shows its own method's
    numbers; equal values share their emphasis."""
    values = {
        "resnet18": 0.50,
        "syn:resnet18": 0.55,
        "vit_tiny_patch16_224": 0.46,
        "syn:vit_tiny_patch16_224": 0.43,
    }
    for method, acc in values.items():
        for seed in range(2):
            write_record(
                tmp_path,
                "classification",
                "retinamnist",
                method,
                seed,
                {"accuracy": acc, "precision_macro": 0.3, "recall_macro": 0.3, "f1_macro": 0.3},
                preset="standard",  # the table's own preset (Tables II and III from one)
            )
    text, _ = build_paper("dcube", "III", results_dir=tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| + Syn")]
    assert len(lines) == 2
    assert "| 88.53 | **55.00 ± 0.00** |" in lines[0] and "| 80.59 | 43.00 ± 0.00 |" in lines[1]
    assert "**30.00" not in text and "<u>30.00" not in text  # one value in a column ranks nothing


def test_sweep_points_and_trials_at_or_below_the_floor_are_flagged_never_bold(tmp_path):
    """The floor comes from the trials' test labels (majority class 0.5 here): N_p = 1 at
    accuracy 0.45 is flagged in Fig. 4's table and in the sweep's trial table."""
    import numpy as np

    from bench.tools.sweep import _trial_flag

    labels = np.array([0] * 5 + [1, 2, 3, 4, 1])
    for n_p, acc in ((1, 0.45), (2, 0.58), (3, 0.57)):
        for seed in (0, 1):  # 2 trials a value: a single trial is never bold
            write_record(
                tmp_path,
                "s",
                "retinamnist",
                "diffmic_v2",
                seed,
                {"accuracy": acc, "f1_macro": 0.3},
                sub="sweeps",
                config={"num_points": n_p, "num_rois": 6, "latent_dim": 128},
            )
            path = next((tmp_path / "sweeps").rglob(f"h{n_p}6128/seed{seed}.json"))
            record = json.loads(path.read_text())
            record.update(
                task="ordinal",
                class_names=list("abcde"),
                predictions=f"seed{seed}.npz",
                predicted_share={"test": [0.6, 0.1, 0.1, 0.1, 0.1]},
                selection={"selection_metric": "accuracy"},
            )
            path.write_text(json.dumps(record))
            np.savez(
                path.with_name(f"seed{seed}.npz"),
                test_labels=labels,
                test_probs=np.full((10, 5), 0.2),
            )
    text, _ = build_paper("diffmic-v2", "Fig4", results_dir=tmp_path, out_dir=tmp_path)
    rows = table_rows(text, "## Table Fig4")
    assert rows["Accuracy (ours)"] == ["⚠ 0.450 (n=2)", "**0.580** (n=2)", "0.570 (n=2)"]
    flags = {
        n_p: _trial_flag(str(next((tmp_path / "sweeps").rglob(f"h{n_p}6128/seed0.json"))))
        for n_p in (1, 2)
    }
    assert flags == {1: "test accuracy 0.450 at or below its floor 0.500", 2: ""}


def test_a_sweep_point_left_out_of_the_grid_comes_from_the_suites_records(tmp_path):
    """K studies of seeds 0 and 1 ran K = 2 and 10 only; K = 6 (the preset's value) is
    the suite's own records at the same config (3 seeds, marked †); a record of another
    preset, config, budget or precision does not join, nor a second record of a seed already
    there. The studies' records carry a budget field (`patience`, None) that the suite's,
    written before it existed, lack: the same budget."""
    base = {"num_points": 6, "latent_dim": 1024}
    budget = {"epochs": 25, "batch_size": 32, "max_steps": None}

    def put(suite, seed, accuracy, preset="standard", extra=None, **kw):
        test = {"accuracy": accuracy, "f1_macro": 0.3}
        extra = {
            "budget": {**budget, "patience": None} if suite != "classification" else budget,
            **(extra or {}),
        }
        write_record(
            tmp_path, suite, "retinamnist", "diffmic_v2", seed, test, preset, extra=extra, **kw
        )

    for seed in (0, 1):
        for k in (2, 10):
            put(
                f"k-study-seed{seed}",
                seed,
                0.5 + k / 100,
                config={**base, "num_rois": k},
                sub="sweeps",
            )
    for seed in (0, 1, 2):
        put("classification", seed, 0.6 + seed / 100, config={**base, "num_rois": 6})
    # another preset, another config of the same preset, another precision: not K = 6
    put("classification", 0, 0.1, "smoke", config={**base, "num_rois": 6}, chash="smoke")
    put("classification", 0, 0.1, config={**base, "num_rois": 4, "latent_dim": 128})
    put(
        "classification",
        2,
        0.1,
        config={**base, "num_rois": 6},
        chash="bf16",
        extra={"provenance": {"precision": "bf16"}},
    )
    put(
        "classification",
        1,
        0.1,
        config={**base, "num_rois": 6},
        chash="12-epochs",
        extra={"budget": {**budget, "epochs": 12}},
    )
    # a one-point N_p study beside the preset's N_p = 6 is an N_p sweep
    put("np-study", 0, 0.55, config={**base, "num_rois": 6, "num_points": 2}, sub="sweeps")
    text = build_paper("diffmic-v2", "V", results_dir=tmp_path)[0].split("| H |")[0]
    rows = table_rows(text, "## Table V")
    assert rows["Accuracy (ours)"] == ["0.520 (n=2)", "—", "**0.610** (n=3†)", "—", "0.600 (n=2)"]
    assert "†: the value a study left out of its grid" in text
    fig4 = table_rows(build_paper("diffmic-v2", "Fig4", results_dir=tmp_path)[0], "## Table Fig4")
    assert fig4["N_p"] == ["2", "6"] and fig4["Accuracy (ours)"][0] == "0.550 (n=1)"


def test_a_restoration_paper_table_keeps_its_floors_apart_and_flags_what_does_not_beat_them(
    tmp_path,
):
    """Survey Table 12: the training-free rows (identity, clip_input, NLM) are floors, in
    italics and never ranked; a learned method no better than NLM is flagged, never bold,
    and gets no verdict from `bench reproduce`. (NLM was bold here before.)"""
    psnr = {"identity": 20.0, "clip_input": 20.3, "nlm": 27.0, "dncnn": 25.2}
    psnr |= {"diffusion_restorer": 28.5, "pix2pix": 27.6}
    for method, value in psnr.items():
        for seed in range(3):
            jitter = 0 if method in ("identity", "clip_input", "nlm") else 0.1 * seed
            test = {"psnr": value + jitter, "ssim": value / 40, "rmse": 1 / value}
            write_record(tmp_path, "restoration", "pkgimages_gauss10", method, seed, test)
    text, pairs = build_paper("survey", "12", results_dir=tmp_path)
    rows = table_rows(text, "### BrainWeb (ours: pkgimages_gauss10)")
    p = rows["method"].index("PSNR (ours)")
    assert rows["Non-local means (floor, ours only) (nlm)"][p] == "_27.00 ± 0.00_"
    assert rows["No restoration (floor, ours only) (identity)"][p] == "_20.00 ± 0.00_"
    assert rows["DNCNN-B (dncnn)"][p].startswith("25.30 ± 0.10 ⚠")
    assert rows["IDDPM (diffusion_restorer)"][p] == "**28.60 ± 0.10**"
    assert rows["Pix2pix (ours only) (pix2pix)"][p].startswith("<u>27.70 ± 0.10</u>")
    assert not any("**" in c or "<u>" in c for k, r in rows.items() if "floor" in k for c in r)
    dncnn = [x for x in pairs if x["method"] == "DNCNN-B" and x["dataset"] == "pkgimages_gauss10"]
    assert all("does not beat the best training-free floor" in x["flag"] for x in dncnn)


def test_a_paper_row_with_an_unquoted_comma_is_refused(tmp_path):
    """{label: a (b, c), ...} in YAML flow style ends the label at the comma."""
    from bench.tools.paper import check_rows

    bad = {"tables": [{"id": "12", "rows": [{"label": "a (b", "c)": None, "ours": "nlm"}]}]}
    with pytest.raises(BenchError, match=r"table 12: row 'a \(b' has unknown keys \['c\)'\]"):
        check_rows(bad, tmp_path / "x.yaml")
    for key in ("diffmic-v2", "dcube", "odm", "survey"):
        load_paper(key)  # every committed paper file passes


def test_a_grid_table_chooses_each_methods_point_on_validation_and_compares_them_by_seed(tmp_path):
    """ODM's weight x guidance grid: test FID per point, each method's point chosen on
    validation FID among points with 2 seeds and no floor flag, then the chosen points'
    test FID compared seed by seed with a t interval."""
    results = tmp_path / "results"
    floors = {"evaluation": {"floors": {"class-mean image": {"fid": 14.0}}}}

    def trial(method, weight, s, seed, val, test, qwk=0.8, lr=1e-3):
        write_record(
            results,
            f"{method}-study",
            "retinamnist",
            method,
            seed,
            {"fid": test},
            preset="standard",
            sub="sweeps",
            config={"ordinal_weight": weight, "guidance_scale": s, "lr": lr},
            extra={
                "metrics": {"test": {"fid": test}, "val": {"fid": val}},
                "ordinal_consistency": {"generated": {"qwk": qwk}, "real": {"qwk": 0.5}},
                **floors,
            },
        )

    empty, _ = build_paper("odm", "Grid", results_dir=results)
    assert "_No grid sweep of odm on retinamnist yet" in empty
    for seed, jitter in ((0, 0.0), (1, 0.2)):
        trial("dm", 0.0, 1.0, seed, 6.0, 4.5 + jitter)
        trial("dm", 0.0, 2.0, seed, 5.0, 4.0 + jitter)  # DM's choice
        trial("odm", 0.1, 1.0, seed, 5.5, 3.0 + 1.5 * jitter)  # ODM's choice, not its test best
        trial("odm", 0.1, 2.0, seed, 7.0, 2.0 + jitter, qwk=0.9)
        trial("odm", 1.0, 1.0, seed, 2.0, 15.0 + jitter)  # best validation, above the FID floor
    trial("odm", 1.0, 2.0, 0, 1.0, 1.0)  # best of all, but one seed
    trial("odm", 1.0, 2.0, 1, 0.5, 0.5, lr=1e-4)  # another setting: left out
    text, _ = build_paper("odm", "Grid", results_dir=results)
    fid_block, qwk_block = text.split("QWK of the generated grades (target: 0.500):")
    rows = table_rows(fid_block, "test FID:")
    assert rows["ordinal weight \\ guidance s"] == ["1", "2"]
    assert rows["dm (0)"] == ["4.600 (n=2)", "**4.100** (n=2)"]
    assert rows["odm (0.1)"] == ["**3.150** (n=2)", "2.100 (n=2)"]
    assert rows["odm (1)"] == ["⚠ 15.100 (n=2)", "1.000 (n=1)"]
    assert table_rows(qwk_block, "\n")["odm (0.1)"] == ["**0.800** (n=2)", "0.900 (n=2)"]
    assert "_1 trial records at other options left out._" in text
    # test FID, odm - dm: -1.0 and -0.9 (t with 1 degree of freedom: 12.71 x 0.0707 / sqrt 2)
    assert (
        "odm at ordinal weight 0.1, guidance s 1; dm at ordinal weight 0, guidance s 2" in text
        and "over 2 matched seeds: -0.950 (95 % t interval [-1.585, -0.315], p = 0.033" in text
        and "lower is better): odm better." in text
    )


def test_a_sweep_table_bolds_the_lowest_value_of_a_lower_is_better_metric(tmp_path):
    from bench.tools.paper_sweep import render_sweep

    for weight, fid in ((0.1, 3.0), (1.0, 5.0)):
        for seed in range(2):
            write_record(
                tmp_path,
                "w",
                "retinamnist",
                "odm",
                seed,
                {"fid": fid + seed / 10},
                sub="sweeps",
                config={"ordinal_weight": weight},
            )
    table = {
        "id": "T",
        "suite": "generation",
        "method": "odm",
        "metrics": {"FID": "fid"},
        "datasets": [{"ours": "retinamnist"}],
        "parameters": [{"name": "weight", "field": "ordinal_weight"}],
    }
    rows = table_rows("\n".join(render_sweep(table, tmp_path, None)), "\n")
    assert rows["FID (ours)"] == ["**3.050** (n=2)", "5.050 (n=2)"]


def test_the_dcube_tables_state_their_deviations_from_the_paper(tmp_path):
    """Issue 34: D-Cube's margin over a ResNet is mostly its sub-feature CNN, trained from
    scratch here but ImageNet-pretrained in the paper (Table II's D-Cube row says so); +Syn
    samples with DDIM 50 and tops classes up to the largest (Table III's rows say so)."""
    text, _ = build_paper("dcube", "II", results_dir=tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| D-Cube (dcube")]
    assert rows and all("from scratch" in r and "ImageNet-pretrained" in r for r in rows)
    text, _ = build_paper("dcube", "III", results_dir=tmp_path)
    syn = [line for line in text.splitlines() if line.startswith("| + Syn")]
    assert len(syn) == 2 and all("DDIM-50" in r and "2:2:3" in r for r in syn)  # its sampler
