"""Render docs/results.md from the JSON files in benchmarks/results/ (numbers are never typed by hand).

    python benchmarks/render.py [--results benchmarks/results] [--out docs/results.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _settings(s: dict) -> str:
    return json.dumps(s, separators=(",", ":")).replace("|", "/")


def compression(rows: list[dict]) -> str:
    ref = next(r for r in rows if r["method"] == "fp32")
    out = ["| method | settings | accuracy | Δ pt | size (B) | ratio | latency µs (p50 / p90) | throughput /s @256 | runtime |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['method']} | `{_settings(r['settings'])}` | {r['accuracy']:.4f} | "
                   f"{100 * (r['accuracy'] - ref['accuracy']):+.2f} | {r['size_bytes']} | {r['compression_ratio']:.1f}× | "
                   f"{1000 * r['latency_ms']:.1f} / {1000 * r['latency_p90_ms']:.1f} | {r['throughput_per_s']:,.0f} | {r['runtime']} |")
    return "\n".join(out)


def search(data: dict) -> str:
    out = [f"{data['trials']} trials per study, {data['folds']}-fold CV, seeds {data['seeds']}, overrides "
           f"`{' '.join(data['overrides']) or '(none: joint space)'}`.", "",
           "| sampler | seed | complete | best ratio ≤0.5 pt | best speedup ≤1 pt | hypervolume | overhead share | wall s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in data["studies"]:
        out.append(f"| {r['sampler']} | {r['seed']} | {r['n_complete']} | {fmt(r['best_ratio_at_0.5pt'], '.1f')}× | "
                   f"{fmt(r['best_speedup_at_1pt'], '.2f')}× | {r['hypervolume']:.4f} | "
                   f"{fmt(r['overhead_share'], '.3f')} | {r['wall_seconds']} |")
    s = data["summary"]
    out += ["", "Summary: " + ", ".join(f"{k} = {v:.4f}" for k, v in s.items() if isinstance(v, (int, float)))]
    return "\n".join(out)


def workers(data: dict) -> str:
    out = [f"Machine: {data['cpu_count']} cores. Settings: `{' '.join(data['settings'])}`.", "",
           "| workers | trials | span s | trials/min | scaling |", "|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        out.append(f"| {r['workers']} | {r['trials']} | {r['span_seconds']} | {r['trials_per_minute']} | "
                   f"×{r['scaling_vs_first']} |")
    return "\n".join(out)


def recommender(data: dict) -> str:
    pop = data["popularity"]
    out = [f"Data: ecommerce, {data['n_users']} users, {data['n_items']} items, seeds {data['seeds']}; {data['protocol']}.",
           f"Popularity baseline: HR@{data['k']} {pop['hr']:.3f}, NDCG@{data['k']} {pop['ndcg']:.3f}.", "",
           f"| setting | HR@{data['k']} | NDCG@{data['k']} | Δ HR pt vs fp32 | size (B) | ratio | latency ms | runtime |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in data["summary"]:
        out.append(f"| {r['setting']} | {r['hr']:.3f} ± {r['hr_std']:.3f} | {r['ndcg']:.3f} | {r['hr_vs_reference_pt']:+.1f} | "
                   f"{r['size_bytes']:.0f} | {r['compression_ratio']:.1f}× | {r['latency_ms']:.3f} | {r['runtime']} |")
    return "\n".join(out)


def scale(data: dict) -> str:
    rows = data.get("rows", [data])
    out = [f"Machine: {data.get('cpu_count', '?')} cores; {data.get('storage', 'sqlite')} stores, synthetic study "
           "(joint-space params, uniform objectives).", "",
           "| trials | list s (`--help` s) | tag s (runs written) | list + tag s | overhead / trial s "
           "| before: full reads / trial s | TPE ask + tell s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['trials']:,} | {r['list_seconds']:.2f} ({r['list_help_seconds']:.2f}) | "
                   f"{r['tag_seconds']:.2f} ({r['tagged_runs']}) | {r['list_plus_tag_seconds']:.2f} | "
                   f"{r['overhead_per_trial_seconds']:.4f} | {r['overhead_full_reads_per_trial_seconds']:.3f} | "
                   f"{r.get('sampler_seconds', float('nan')):.2f} |")
    return "\n".join(out)


MODE_NAMES = {"recipes": "(a) seed recipes only", "random": "(b) random search", "tpe_before": "(c) TPE as before",
              "default": "(d) new default", "default_no_shrink": "(d) without shrink steps",
              "default_shrink2": "(d) with a shrink step every 2nd trial", "default_shrink3": "(d) shrink step every 3rd trial",
              "default_one_level": "(d) with shrink steps at one level",
              "default_gp": "(d) with the GP sampler",
              "default_nsga2": "(d) with NSGA-II", "default_random": "(d) with random sampling"}


def search_wallclock(data: dict) -> str:
    """Means over seeds per dataset and mode; the done-means ratios below each dataset's rows."""
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    out = [f"Budget {data['budget_seconds']:.0f} s of wall-clock per study (`study.timeout`, fp32 references "
           f"included; the recipes run all six, however long), {data['folds']}-fold CV, seeds {data['seeds']}.", "",
           "| space / data | mode | best ratio ≤0.5 pt | best speedup ≤1 pt | hypervolume | trials/min | wrong prunes |",
           "|---|---|---:|---:|---:|---:|---:|"]
    if data.get("note"):                     # when and how it was measured, written into the JSON by hand
        out[1:1] = ["", data["note"]]
    for cell_name, cell in data["summary"].items():
        for mode in MODE_NAMES:
            if mode in cell:
                c = cell[mode]
                out.append(f"| {cell_name} | {MODE_NAMES[mode]} | {fmt(c['best_ratio_at_0.5pt'], '.1f')}× | "
                           f"{fmt(c['best_speedup_at_1pt'], '.2f')}× | {c['hypervolume']:.4f} | "
                           f"{c['trials_per_minute']:.1f} | {fmt(c['wrong_prunes'], 'd')} |")
        ratios = [f"(d)/(a) best ratio {fmt(cell.get('default_over_recipes_ratio'), '.2f')}×",
                  f"(d)/Deep-Compression recipe {fmt(cell.get('default_over_deep_compression_ratio'), '.2f')}×",
                  f"(d)/(b) hypervolume {fmt(cell.get('default_over_random_hypervolume'), '.2f')}×"
                  + (f" (linear axes {cell['default_over_random_hypervolume_linear']:.2f}×)"
                     if cell.get("default_over_random_hypervolume_linear") else "")
                  + (f", paired-speedup axis {cell['default_over_random_hypervolume_paired']:.2f}×"
                     if cell.get("default_over_random_hypervolume_paired") else "")
                  + (f", above chance {cell['default_over_random_hypervolume_above_chance']:.2f}×"
                     if cell.get("default_over_random_hypervolume_above_chance") else ""),
                  f"(d)/(c) trials/min {fmt(cell.get('default_over_before_trials_per_minute'), '.2f')}×"]
        if cell.get("default_over_recipes_ratio") is not None:
            out.append(f"| {cell_name} | **ratios** | {' · '.join(ratios)} | | | | |")
    return "\n".join(out)


def front_bound(data: dict) -> str:
    """Per space, dataset and mode: the mode's volume and the union's (paired, and on accuracy and size alone),
    means over the seeds the mode ran."""
    out = [f"From {', '.join(f'`{f}`' for f in data['files'])}.", "",
           "| space / data | trials in the union (all seeds) | mode @ budget | seeds | mode's volume | union's volume | "
           "union / mode | the same on (accuracy, size) alone |",
           "|---|---:|---|---|---:|---:|---:|---:|"]
    for name, cell in data["bound"].items():
        n_points = sum(s["n_points"] for s in cell["seeds"].values())
        for mode, c in cell["modes"].items():
            p, a = c["paired"], c["accuracy_size"]
            out.append(f"| {name} | {n_points} | {mode} | {', '.join(c['seeds'])} | {p['volume']:.3f} | "
                       f"{p['union']:.3f} | {p['union_over']:.3f} | {a['volume']:.3f} / {a['union']:.3f} = "
                       f"{a['union_over']:.3f} |")
    return "\n".join(out)


def finetune_step(data: dict) -> str:
    """One fine-tune step per compression setting, against a plain training step of the same net."""
    out = [f"{data['model']}, {data['rows_trained']} training rows, batch {data['batch_size']}, {data['epochs']} epochs "
           f"({data['steps']} steps), {data['threads']} thread, best of {data['repeats']}; torch {data['torch']}; commit "
           f"{data.get('commit', '?')}.", "",
           "| setting | ms per step | × a training step |", "|---|---:|---:|"]
    out += [f"| {r['setting']} | {r['ms_per_step']:.2f} | {r['vs_training']:.2f}× |" for r in data["rows"]]
    return "\n".join(out)


def trials_per_minute(data: dict) -> str:
    """Side-by-side pairs: the build before issue 9 against this one, trials per minute."""
    out = [data["note"], "", "| pair | data | code | fine-tune | finished (pruned) | trials/min | vs the pair's first |",
           "|---:|---|---|---|---:|---:|---:|"]
    first: dict = {}
    for r in data["rows"]:
        base = first.setdefault((r["pair"], r["data"]), r["trials_per_minute"])
        out.append(f"| {r['pair']} | {r['data']} | {r['code']} | {r['finetune']} | {r['finished']} ({r['pruned']}) | "
                   f"{r['trials_per_minute']:.1f} | {r['trials_per_minute'] / base:.2f}× |")
    return "\n".join(out)


def recommender_study(data: dict) -> str:
    ref = data["reference"]
    out = [f"Command: `python {data['command']}` (commit {data['commit']}); wall clock {data['wall_clock']}, peak RSS "
           f"{data['peak_rss_gib']} GiB. fp32 reference: HR@10 {ref['accuracy']:.4f}, {ref['size_bytes']:.0f} B, "
           f"{ref['latency_ms']:.3f} ms to score every item for one request, NDCG@10 {ref['ndcg']:.4f}; its training "
           f"took {ref['train_seconds']:.1f} s per fold ({data['reference_epochs']} epochs, "
           f"{ref['train_seconds'] / data['reference_epochs']:.1f} s an epoch); trials load it from the base cache.", "",
           "| trial | from | Pareto | HR@10 vs fp32 (pt) | NDCG@10 | size (B) | ratio | latency ms | speedup | rank | bits | "
           "grid | prune | neurons | fine-tune epochs | compress s / fold | seconds |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for t in data["trials"]:
        p = t["params"]
        origin = (f"recipe {t['recipe']}" if t["recipe"] else f"shrink of {t['shrink_of']}" if t["shrink_of"] is not None
                  else "TPE")
        speedup = ref["latency_ms"] / t["latency_ms"]
        out.append(f"| {t['number']} | {origin} | {'**yes**' if t['pareto'] else ''} | {t['hr_vs_reference_pt']:+.2f} | "
                   f"{t['ndcg']:.4f} | {t['size_bytes']:.0f} | {t['ratio']:.1f}× | {t['latency_ms']:.3f} | {speedup:.2f}× | "
                   f"{p.get('compress.lowrank.rank', 0)} | {p.get('compress.quant.bits', p.get('compress.quant.scheme'))} | "
                   f"{p.get('compress.quant.granularity', '-')} | {p.get('compress.prune.ratio', 0):.2f} | "
                   f"{p.get('compress.neurons.ratio', 0):.2f} | {p.get('compress.finetune_epochs')} | "
                   f"{t['compress_seconds']:.0f} | {t['seconds']:.0f} |")
    out += ["", data["note"]]
    return "\n".join(out)


def recommender_scale(data: dict) -> str:
    """One row per training loss at catalogue scale, plus the popularity baseline."""
    d, pop = data["data"], data["popularity"]
    out = [f"{d['n_users']:,} users × {d['n_items']:,} items ({d['events']:,} events, generated in "
           f"{d['generate_seconds']:.0f} s), {data['train']['epochs']} epochs, HR/NDCG@{data['k']} over all items.", "",
           "| loss | s / epoch | peak RSS | HR@10 | NDCG@10 | size |", "|---|---:|---:|---:|---:|---:|",
           f"| popularity | | | {pop['hr']:.4f} | {pop['ndcg']:.4f} | |"]
    for r in data["runs"]:
        label = f"sampled ({r['negatives']} negatives)" if r["loss"] == "sampled" else r["loss"]
        out.append(f"| {label} | {r['epoch_seconds']:.1f} | {r['peak_rss_mb']:.0f} MiB | {r['hr']:.4f} | "
                   f"{r['ndcg']:.4f} | {r['size_bytes'] / 2**20:.1f} MiB |")
    return "\n".join(out)


def latency(data: dict) -> str:
    """Per model: noise, overhead, every artifact in every runtime, the cost of pairing, and the spread of the
    paired speedup across processes (idle and with a core burning)."""
    us = lambda ms: f"{1000 * ms:.1f}"  # noqa: E731
    machine = data.get("machine", "shared with other jobs (not idle)")
    out = [f"Machine: {data['cpu_count']} cores, {machine}. Protocol `{_settings(data['protocol'])}` "
           f"({data['protocol'].get('blocks', 10)} alternating blocks); intervals are 95% bootstraps over blocks."]
    for key, m in data["models"].items():
        oh = m["overhead_ms"]
        ref_oh = oh.get(m["reference_runtime"], float("nan"))
        out += ["", f"### {key}", "",
                f"fp32 reference: {m['reference_runtime']}, {us(m['reference_latency_ms'])} µs, accuracy "
                f"{m['reference_accuracy']:.4f}. A/A (fp32 against itself): speedup {m['aa_speedup']:.3f} "
                f"[{m['aa_ci'][0]:.3f}, {m['aa_ci'][1]:.3f}], noise floor ±{100 * m['latency_noise']:.1f}%. "
                f"Empty forward (per-call overhead): " + ", ".join(f"{k} {us(v)} µs" for k, v in oh.items())
                + f"; in the reference's runtime that is {100 * ref_oh / m['reference_latency_ms']:.0f}% of its latency.",
                "", "| artifact | size (B) | runtime | accuracy | latency µs p50 [95% CI] | p90 µs | speedup vs fp32 same runtime [95% CI] |",
                "|---|---:|---|---:|---:|---:|---:|"]
        for a in m["artifacts"]:
            for rt, r in a["runtimes"].items():
                out.append(f"| {a['name']} | {a['size_bytes']} | {rt} | {r['accuracy']:.4f} | {us(r['latency_ms'])} "
                           f"[{us(r['latency_ci'][0])}, {us(r['latency_ci'][1])}] | {us(r['latency_p90_ms'])} | "
                           f"{r['speedup_vs_fp32_same_runtime']:.2f}× [{r['speedup_ci'][0]:.2f}, {r['speedup_ci'][1]:.2f}] |")
        out += ["", "As a study scores them (best runtime, paired against the fp32 reference in its runtime) and what "
                "pairing costs (evaluation seconds of one fold, alone → paired):", "",
                "| artifact | best runtime | accuracy | paired speedup [95% CI] | unpaired speedup | eval s fold 0 | eval s other folds |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for a in m["artifacts"]:
            e0, e1 = a["eval_seconds_fold0"], a["eval_seconds_other_folds"]
            out.append(f"| {a['name']} | {a['best_runtime']} | {a['accuracy']:.4f} | {a['speedup']:.2f}× "
                       f"[{a['speedup_ci'][0]:.2f}, {a['speedup_ci'][1]:.2f}] | {a['unpaired_speedup']:.2f}× | "
                       f"{e0['alone']:.3f} → {e0['paired']:.3f} | {e1['alone']:.3f} → {e1['paired']:.3f} |")
        pr = m["processes"]
        out += ["", f"{len(pr['idle']['runs'])} separate processes, `{pr['candidate']}` ({pr['runtime']}) against fp32 "
                f"({m['reference_runtime']}); spread = (max − min) / median:", "",
                "| machine | paired speedups | speedup spread | candidate latency spread | reference latency spread |",
                "|---|---|---:|---:|---:|"]
        for cond in ("idle", "busy"):
            c = pr[cond]
            label = "as is" if cond == "idle" else "+ a process burning a core"
            speedups = ", ".join(format(r["speedup"], ".3f") for r in c["runs"])
            out.append(f"| {label} | {speedups} | "
                       f"{100 * c['speedup_spread']:.1f}% | {100 * c['latency_spread']:.1f}% | "
                       f"{100 * c['reference_latency_spread']:.1f}% |")
    if data.get("spread_by_protocol"):     # the same 5-process check under several protocols
        out += ["", "### The spread across 5 processes by protocol (`benchmarks/latency.py --repeats R --blocks B`)", "",
                "Timed calls per measurement (`latency.repeats`, both sides together) and alternating blocks "
                f"(`latency.blocks`); the tables above used {data['protocol']['repeats']} / "
                f"{data['protocol']['blocks']}, the study's default when they were measured.", "",
                "| repeats / blocks | model | candidate (runtime) | paired speedup spread idle / busy core | "
                "candidate latency spread idle / busy core |", "|---|---|---|---:|---:|"]
        for r in data["spread_by_protocol"]:
            out.append(f"| {r['repeats']} / {r['blocks']} | {r['model']} | {r['candidate']} ({r['runtime']}) | "
                       f"{100 * r['idle_speedup_spread']:.1f}% / {100 * r['busy_speedup_spread']:.1f}% | "
                       f"{100 * r['idle_latency_spread']:.1f}% / {100 * r['busy_latency_spread']:.1f}% |")
    return "\n".join(out)


def _ci(c: list[float]) -> str:
    return f"[{c[0]:.2f}, {c[1]:.2f}]"


def seqrec_breakdown(data: dict) -> str:
    """One row per (item table, runtime, forward): each stage's µs (the difference of consecutive cuts' medians),
    the total, the total less the scoring product (encoder + per-call overhead), and last-position's gain."""
    stages = list(next(iter(next(iter(data["tables"].values())).values()))["before"]["stage_us"])
    m = data["machine"]
    out = [f"{data['items']:,} items, `d_model` {data['d_model']}, `max_len` {data['max_len']}, {data['blocks']} block, "
           f"side features {data['side_vocab']}, user features {data['user_vocab']}; {data['protocol']}. Machine: "
           f"{m['cpu_count']} cores ({m['processor']}), torch {m['torch']}, shared with other jobs.", "",
           "| item table | runtime | forward | " + " | ".join(f"{s} µs" for s in stages)
           + " | total µs | total − scores µs | last vs full | same top-10 |",
           "|---|---|---|" + "---:|" * (len(stages) + 4)]
    encoder: dict[str, list[str]] = {}
    for table, runtimes in data["tables"].items():
        for rt, r in runtimes.items():
            for fwd, label in (("before", "full (before)"), ("now", "last position (now)")):
                e = r[fwd]
                rest = e["total_us"] - e["stage_us"]["scores"]
                gain = f"{r['now_vs_before_speedup']:.2f}×" if fwd == "now" else ""
                same = ("yes" if r["same_top10"] else "**no**") if fwd == "now" else ""
                out.append(f"| {table} | {rt} | {label} | " + " | ".join(f"{e['stage_us'][s]:.1f}" for s in stages)
                           + f" | **{e['total_us']:.1f}** | {rest:.1f} | {gain} | {same} |")
                if fwd == "now":
                    encoder.setdefault(rt, []).append(f"{table} {rest:.1f}")
    out += ["", "Encoder + per-call overhead (total − scores, last position): "
            + "; ".join(f"{rt}: " + ", ".join(v) + " µs" for rt, v in encoder.items()) + "."]
    return "\n".join(out)


def seqrec_pareto(data: dict) -> str:
    """Per setting: HR@10 against the fp32 reference, size, runtime, the paired speedup against the reference
    artifact on its runtime, the re-measured speedup against fp32 on its fastest runtime, and (apart) against fp32
    in torchscript."""
    d, ref = data["data"], data["rows"][0]
    fastest = min(ref["speedup_vs_fp32_on"], key=lambda rt: ref["speedup_vs_fp32_on"][rt]["fp32_ms"])
    aa = ref["a_a"]
    m = data["machine"]
    out = [f"Data: {d['name']}, {d['n_users']:,} users × {d['n_items']:,} items; {data['fold']}; fp32 trained "
           f"{data['train']['epochs']} epochs, compressed settings + {data['finetune_epochs']} fine-tune epochs, one "
           f"seed. Latency: batch {data['latency']['batch_size']}, {data['latency']['threads']} thread, "
           f"{data['latency']['repeats']} calls in {data['latency']['blocks']} alternating blocks. Machine: "
           f"{m['cpu_count']} cores, shared with other jobs. {data['protocol']}.", "",
           f"fp32 reference: HR@10 {ref['hr']:.4f}, NDCG@10 {ref['ndcg']:.4f}, {ref['size_bytes']:,} B, served on "
           f"{ref['runtime']} ({1000 * ref['latency_ms']:.1f} µs); A/A {aa['speedup']:.3f} "
           f"[{aa['speedup_ci_low']:.3f}, {aa['speedup_ci_high']:.3f}]. fp32 is fastest on {fastest} "
           "(" + ", ".join(f"{rt} {1000 * v['fp32_ms']:.1f} µs" for rt, v in ref["speedup_vs_fp32_on"].items())
           + ", measured next to each setting in turn).", "",
           "| setting | HR@10 | Δ pt vs fp32 | size (B) | ratio | runtime | latency µs | paired speedup vs fp32 "
           f"reference [95% CI] | re-measured vs fp32 on {fastest} [95% CI] | vs fp32 in torchscript [95% CI] "
           "(not the fair comparison) |",
           "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in data["rows"]:
        on = r["speedup_vs_fp32_on"]
        ts = on.get("torchscript")
        ts_cell = f"{ts['speedup']:.2f}× {_ci(ts['ci'])}" if ts else "-"
        if r is ref:
            paired, delta = f"A/A {aa['speedup']:.2f}× [{aa['speedup_ci_low']:.2f}, {aa['speedup_ci_high']:.2f}]", ""
        else:
            paired, delta = f"**{r['speedup']:.2f}×** {_ci(r['speedup_ci'])}", f"{r['hr_vs_fp32_pt']:+.2f}"
        out.append(f"| {r['setting']} | {r['hr']:.4f} | {delta} | {r['size_bytes']:,} | "
                   f"{ref['size_bytes'] / r['size_bytes']:.1f}× | {r['runtime']} | {1000 * r['latency_ms']:.1f} | "
                   f"{paired} | {on[fastest]['speedup']:.2f}× {_ci(on[fastest]['ci'])} | {ts_cell} |")
    above = sum(r["hr"] > ref["hr"] for r in data["rows"][1:])
    b = data.get("best_within_1pt")
    out += ["", f"{above} of {len(data['rows']) - 1} compressed settings score above the fp32 reference's HR@10."]
    if b:
        out[-1] += (f" Best within 1 pt (by the speedup against fp32 at its fastest): **{b['setting']}** "
                    f"({b['hr_vs_fp32_pt']:+.2f} pt, {b['runtime']}), paired {b['speedup']:.2f}× {_ci(b['speedup_ci'])}, "
                    f"re-measured {b['speedup_vs_fastest_fp32']:.2f}× against fp32 on {fastest}; issue 11 asks for 2×.")
    return "\n".join(out)


def seqrec_study(data: dict) -> str:
    """The command, the fp32 reference, and the study's Pareto trials plus the fastest trial within 1 pt."""
    ref, pm = data["reference"], data["parent_metrics"]
    trials = data["trials"]
    out = [f"Command: `{data['command']}`.", "",
           f"fp32 reference ({data['reference_runtime']}): HR@10 {ref['accuracy']:.4f} ± {ref['accuracy_std']:.4f} "
           f"over folds, NDCG@10 {ref['ndcg']:.4f}, {ref['size_bytes']:,.0f} B, {1000 * ref['latency_ms']:.1f} µs "
           f"(p90 {1000 * ref['latency_p90_ms']:.1f} µs), of which {1000 * pm['latency_overhead_ms']:.1f} µs "
           f"({100 * pm['latency_overhead_share']:.0f}%) is the per-call overhead of an empty forward; A/A noise floor "
           f"±{100 * data['latency_noise_a_a']:.1f}%. Popularity baseline HR@10 {pm['popularity_hr']:.4f}; fp32 trained "
           f"{pm['reference_long_epochs']:.0f} epochs HR@10 {data['reference_long_accuracy']:.4f}. "
           f"{data['n_complete']} trials complete, "
           f"{sum(t['state'] == 'PRUNED' for t in trials)} pruned, {sum(bool(t.get('pareto')) for t in trials)} on "
           f"the front (HR@10, size, latency); hypervolume {pm['hypervolume']:.4f}.", "",
           "| trial | from | Pareto | HR@10 | Δ pt vs fp32 | size (B) | ratio | runtime | latency µs | "
           "paired speedup [95% CI] | rank | bits | grid | prune | neurons | fine-tune epochs |",
           "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    best = data.get("best_speedup_within_1pt")
    shown = [t for t in trials if t.get("pareto") or (best and t["number"] == best["number"])]
    for t in sorted(shown, key=lambda t: -t["speedup"]):
        p = t["params"]
        origin = (f"recipe {t['recipe']}" if t["recipe"] else
                  f"shrink of {t['shrink_of']}" if t.get("shrink_of") is not None else "TPE")
        mark = "**yes**" if t["pareto"] else "no (fastest within 1 pt)"
        out.append(f"| {t['number']} | {origin} | {mark} | {t['hr']:.4f} | {t['hr_vs_fp32_pt']:+.2f} | "
                   f"{t['size_bytes']:,.0f} | {ref['size_bytes'] / t['size_bytes']:.0f}× | {t['runtime']} | "
                   f"{1000 * t['latency_ms']:.1f} | {t['speedup']:.2f}× {_ci(t['speedup_ci'])} | "
                   f"{p.get('compress.lowrank.rank', 0)} | {p.get('compress.quant.bits', p.get('compress.quant.scheme'))} | "
                   f"{p.get('compress.quant.granularity', '-')} | {p.get('compress.prune.ratio', 0):.2f} | "
                   f"{p.get('compress.neurons.ratio', 0):.2f} | {p.get('compress.finetune_epochs')} |")
    lines = []
    for key, label in (("best_speedup_within_1pt", "Fastest trial within 1 pt of fp32"),
                       ("best_pareto_speedup_within_1pt", "fastest Pareto trial within 1 pt")):
        if data.get(key):
            b = data[key]
            lines.append(f"{label}: trial {b['number']}, {b['speedup']:.2f}× {_ci(b['speedup_ci'])} "
                         f"({b['hr_vs_fp32_pt']:+.2f} pt, {b['size_bytes']:,.0f} B)")
    above = sum(t["hr"] > ref["accuracy"] for t in trials if t["state"] == "COMPLETE")
    out += ["", "; ".join(lines) + f". {above} of {data['n_complete']} complete trials score above the fp32 "
            "reference's HR@10; issue 11 asks for 2×."]
    return "\n".join(out)


SECTIONS = [
    ("compression.json", "Compression techniques on digits (`benchmarks/compression.py`)",
     "LeNet-300-100 trained once per setting on the development rows, scored on the held-out test split, every "
     "number measured on the file loaded back (size = file length). Latency at batch 1, 1 thread.", compression),
    ("search.json", "TPE against random search (`benchmarks/search.py`)",
     "Fixed-budget studies on digits with the default joint space. Ratios and speedups are against each study's "
     "fp32 reference in CV accuracy; hypervolume over (accuracy, size/ref, latency/ref), reference point "
     "(0, 1.5, 1.5); overhead = share of trial wall time outside training, packing and evaluation.", search),
    ("search_wallclock_compress_only.json", "The search against the expert recipe, compress-only (`benchmarks/search.py --wallclock`)",
     "The same wall-clock budget spent four ways on the MLP 300-100: (a) the six seed recipes alone, (b) random "
     "search, (c) TPE as the first build ran it (no base cache, no recipes, no early stopping, fine-tune not "
     "searched), (d) the new default (base cache + recipes + early stopping + fine-tune searched). Ratios and "
     "speedups against each study's fp32 reference in CV accuracy; hypervolume over (accuracy, size/ref, "
     "latency/ref) with the first study's reference and point (0, 1.5, 1.5); *wrong prunes*: trials stopped "
     "early that would have been on the final front had they run every fold (each re-run on all folds; a model no "
     "better than always predicting the most frequent class, which the 0-byte predictor dominates, does not count). The "
     "synthetic dataset is made by scikit-learn at run time (6 classes, 30 features).", search_wallclock),
    ("search_wallclock_shrink.json", "Shrink steps: the default with and without (`benchmarks/search.py --wallclock`)",
     "Compress-only as above; (d) is the default with shrink steps (`study.shrink_every=3`), set against the default "
     "without them (`study.shrink_every=0`). The recipes row (a) is copied from the table above (its six trials run "
     "without a time budget, so load does not change it); hypervolumes use each run's first study's reference, so "
     "compare them within a dataset only roughly.", search_wallclock),
    ("search_wallclock_granularity.json", "One grid per tensor in the space (`compress.quant.granularity`)",
     "The default of the shrink table with `compress.quant.granularity` (channel | tensor) added to the compress-only "
     "space; recipes (a) copied as above.", search_wallclock),
    ("search_wallclock_current.json", "Today's default against random search, same runs (`benchmarks/search.py --wallclock`)",
     "Compress-only, MLP 300-100, as in the first table: (b) random search and (d) today's default in one run per "
     "dataset.", search_wallclock),
    ("search_wallclock_2026-11-27.json", "The search against the expert recipe, 2026-11-27 (`benchmarks/search.py --wallclock`)",
     "Compress-only, MLP 300-100, as in the first table, after float16 preprocessing statistics, entropy-coded "
     "masks (format 3), the compact header (format 4), ternary / one-grid-per-tensor shrink moves with a longer "
     "fine-tune for narrow misses, and the fine-tune searched up to 60 epochs: (a) the six recipes, (b) random search, "
     "(d) the default, in one run per dataset. (d)/(a) is the ratio of the means over seeds; per seed and the "
     "hypervolume's axes are in the README.", search_wallclock),
    ("search_wallclock_2026-11-27b.json", "The search against the expert recipe, 2026-11-27, second run (`benchmarks/search.py --wallclock`)",
     "As above after the fine-tune got cheaper (dense fake quantization for every scheme, fused optimizer steps) and "
     "the per-trial overhead smaller: more trials in the same 90 s. (a) the six recipes, (b) random search, (d) the "
     "default, and on digits and breast_cancer the default with a shrink step every 2nd trial instead of every 3rd "
     "(not better overall, so the default stays 3).", search_wallclock),
    ("search_wallclock_2026-11-27c.json", "The search against the expert recipe, 2026-11-27, third run (`benchmarks/search.py --wallclock`)",
     "As above at 2072864: shrink steps take bigger steps first from a parent far above the tolerance, and the "
     "latency protocol is 400 calls in 20 blocks. (a) the six recipes, (b) random search, (d) the default; two "
     "processes side by side (synthetic then digits on one core, breast_cancer on the other).", search_wallclock),
    ("search_wallclock_2026-11-27d.json", "The search against the expert recipe, 2026-11-27, fourth run (`benchmarks/search.py --wallclock`)",
     "As the third run at 5c747d9: a shrink child that missed the tolerance narrowly is retried with twice the "
     "fine-tune epochs at twice the fine-tune learning rate, and runtime candidates are screened with 100 calls "
     "(`latency.choice_repeats`). Same two processes side by side.", search_wallclock),
    ("search_wallclock_2026-11-27e.json", "The search against the expert recipe, 2026-11-27, fifth run (`benchmarks/search.py --wallclock`)",
     "At bed34ec (session 8): the same search, with a cheaper fine-tune (bit-identical values), one ONNX export for "
     "both ONNX candidates, and each worker kept to `train.threads` CPU threads. Same two processes side by side "
     "(synthetic then digits on one core, breast_cancer on the other). Random search draws the same trials as in the "
     "fourth run (same seeds, deterministic training), so its columns repeat.", search_wallclock),
    ("search_wallclock_2026-11-27f.json", "The search against the expert recipe, 2026-11-27, sixth run (`benchmarks/search.py --wallclock`)",
     "At 83a76d6 (session 9): shrink steps at three accuracy levels (`study.shrink_levels=3`: every other step within "
     "0.5 pt, the ones between within 2 and 8 pt). Same two processes side by side. The ratios line adds the "
     "hypervolume with each trial's latency read off its paired speedup (timed against its own study's fp32 "
     "reference in alternating blocks): the plain column divides every study's absolute latencies by the first "
     "study's reference latency, so a study that ran while the machine was busier loses volume for that alone.",
     search_wallclock),
    ("search_wallclock_180s.json", "The search against the expert recipe at 180 s, 2026-11-27, seventh run (`benchmarks/search.py --wallclock 180`)",
     "At defc800 (session 10; the search code of the sixth run, 83a76d6): twice the budget, 180 s per study, same "
     "datasets, seeds and processes (synthetic then digits on one core, breast_cancer on the other). The ratios "
     "line adds the hypervolume above chance: the paired one with accuracy counted from the majority-class rate of "
     "the development rows instead of 0 (a different measure, reported beside the others, not instead). Each "
     "study's trials are in the file (`points`).", search_wallclock),
    ("search_wallclock_180s_synthetic_seeds_3_5.json", "The same at 180 s, synthetic, seeds 3 to 5",
     "Run beside the digits studies above, after breast_cancer, on the same core as breast_cancer: three more seeds "
     "of the set where the 90 s runs fell short of 2x the best recipe.", search_wallclock),
    ("search_wallclock_180s_stop_synthetic.json", "The default again at 180 s with the early stop's size and binomial rules, synthetic (`--modes default --check-prunes`)",
     "At f9ca653: the seventh run's synthetic seeds 0-2 for the default only, every stop re-checked; recipes and random "
     "search as in the seventh run.", search_wallclock),
    ("search_wallclock_joint_2026-11-27.json", "The search against the expert recipe, joint space, 2026-11-27 (`benchmarks/search.py --wallclock 90 --spaces joint --check-prunes`)",
     "At defc800 (session 10): the default joint space (compression and training searched together), 90 s per "
     "study as in the joint run of 2026-11-26 below, and every pruned trial of every study re-run on all folds "
     "(`--check-prunes`): a wrong prune is a stopped trial that would have been on the study's final front. Two "
     "processes side by side (digits then breast_cancer on one core, synthetic on the other).", search_wallclock),
    ("search_wallclock_joint_2026-11-27_stop.json", "The joint space again with the early stop's size and binomial rules (`benchmarks/search.py --wallclock 90 --spaces joint --modes default --check-prunes`)",
     "The default at 8b3c2e4: a finished trial stops a running one only when it is smaller by more than two standard "
     "errors of the file size, and more accurate by more than two standard errors of which the binomial noise of a "
     "fold's accuracy is a floor. Recipes and random search are the studies of the section above (they run without "
     "early stopping). Wrong prunes: 1 of 95 stops, against 8 of 148 above.", search_wallclock),
    ("search_wallclock_1800s_default.json", "The default for ten times the budget (`benchmarks/search.py --wallclock 1800 --modes default`)",
     "At b1fc549 (session 11): the default alone, 1800 s per study, seed 0, compress-only with the MLP fixed; "
     "breast_cancer and digits as two processes side by side, nothing else running. Its trials join the union "
     "in the section below. The plain hypervolume column divides by the first study's reference latency, which "
     "read 32-34 µs at these studies' start (9-10 µs in the 180 s runs); the paired volumes below do not use it.",
     search_wallclock),
    ("search_wallclock_180s_onnx_run.json", "Random search and the default at 180 s with ONNX Runtime timed on its own call (`benchmarks/search.py --wallclock 180 --modes random default`)",
     "At 3315dc0 (session 11): ONNX Runtime timed on `InferenceSession.run` alone (squeeze's torch conversion no "
     "longer in the timed call), runtime candidates screened in interleaved rounds. digits and breast_cancer as two "
     "processes side by side. This day's machine times batch-1 calls ~2-3x slower than session 10's and runs "
     "fewer trials per minute: compare within this table only. Speedups within 1 pt now read 1.32-1.35x (1.16-1.24x "
     "with the conversion timed); the hypervolume ratio is where it was.", search_wallclock),
    ("search_front_bound.json", "How much volume any search found: the union of every trial (`benchmarks/search.py --bound`)",
     "Per dataset and seed, every finished trial of every study in the files below (recipes, random search, the "
     "default at 90, 180 and 1800 s) pooled into one front, and its paired hypervolume (axes relative to each "
     "study's own fp32 reference) over each mode's, mean over the seeds the mode ran; the last column is the same "
     "on (accuracy, size) alone, which the run-to-run noise of the speedups does not move. The union is the best "
     "front seen, and it flatters itself (each point is the best of several noisy readings): even so, in the "
     "compress-only space it is 1.09-1.11x random search's volume at 180 s, below issue 9's 1.15x, so no "
     "sampler could reach 1.15x there by finding what these searches found.", front_bound),
    ("finetune_step_before.json", "What a fine-tune step cost before the dense fakes (`benchmarks/finetune_step.py` at d4cb3e0)",
     "The fine-tune after compression trains through fake quantization and masks; on a small net its cost per step "
     "is per-operation overhead, which decides trials per minute of a compress-only study. The same script run on "
     "the build before session 6's fine-tune changes (non-fused optimizer, encode/decode fakes). Timings on the "
     "shared 2-core machine move by ±20% between runs (the training step's too, so compare ms per step).",
     finetune_step),
    ("finetune_step_508a42a.json", "What a fine-tune step cost at 508a42a (`benchmarks/finetune_step.py`)",
     "As above on session 6's build (dense fakes for every scheme, topk clip quantiles, cached masks, fused "
     "optimizer), run right after it.", finetune_step),
    ("finetune_step_1c08d16.json", "What a fine-tune step cost at 1c08d16 (`benchmarks/finetune_step.py`)",
     "Session 7's last build, measured on the day of the run below (repeats 5), before session 8's changes.",
     finetune_step),
    ("finetune_step.json", "What a fine-tune step costs now (`benchmarks/finetune_step.py`)",
     "As above on this build (session 8: clip quantiles and pruning thresholds read off numpy's sort, binary and "
     "ternary signs by a multiply, the uniform grid's per-channel arithmetic in numpy, what a mask derives cached "
     "until it changes; the same values bit for bit). Another day on the same machine: its plain training step ran "
     "0.81 ms where the run above had 0.70, so compare the x-a-training-step column.", finetune_step),
    ("trials_per_minute.json", "Trials per minute against the build before issue 9 (side by side)",
     "Issue 9 asks for 2.5x the trials per minute of the build it was filed against (fba977a) on compress-only with "
     "the MLP fixed. Measured with `python -m search.sweep` in two git worktrees at once (`benchmarks/trials_per_minute.py "
     "--old fba977a [--fixed-finetune]` repeats one pair).", trials_per_minute),
    ("search_wallclock_joint.json", "The search against the expert recipe, joint space (`benchmarks/search.py --wallclock`)",
     "As above with the default joint space (compression and training searched together).", search_wallclock),
    ("search_custom_resmlp.json", "A user's model: residual MLP on digits (`benchmarks/search.py`, `model=custom`)",
     "The test suite's `ResMLP` (tests/user_models/nets.py) brought with `model=custom model._target_=...`, "
     "searched like a built-in model: default joint space, TPE, 30 trials, 3-fold CV (measured while other jobs "
     "shared the 2 cores). Its fp32 model is 4.6× smaller than LeNet-300-100's, so its ratios start lower.", search),
    ("search_custom_builtin_mlp.json", "The built-in MLP, same session and settings (for the row above)",
     "LeNet-300-100 with the same study settings, run in the same session as the residual MLP.", search),
    ("workers_82bfe72.json", "Local worker processes before the thread cap (`benchmarks/workers.py --trials 40` at 82bfe72)",
     "The same study with 1 and 2 worker processes on a journal file; trials/min from the trials' own timestamps. "
     "Each worker still ran torch and BLAS at their default thread counts (every core).", workers),
    ("workers.json", "Local worker processes (`benchmarks/workers.py --trials 40`)",
     "As above at 5160dc6, measured just before it: each worker keeps to `train.threads` CPU threads (torch and numpy's BLAS), "
     "so two workers on two cores no longer wait on each other's threads.", workers),
    ("recommender.json", "Sequential recommender (`benchmarks/recommender.py`)",
     "SASRec-style model on the synthetic shop; HR@10 / NDCG@10 on each user's last event, ranking all items.",
     recommender),
    ("recommender_20000.json", "The recommender at 20,000 items: techniques against fp32 (`benchmarks/recommender.py`)",
     "20,000 users x 20,000 items, `train.loss=sampled` (256 negatives), 8 epochs (fp32's best on a learning curve; it "
     "overfits after ~8), compressed settings + 5 fine-tune epochs, **one seed**; HR@10 / NDCG@10 over all items. Runs at "
     "nice 19, two at a time, on the shared 2-core CPU: seconds and latencies are noisy. Fixed settings, not a study's "
     "front.", recommender),
    ("recommender_200_study.json", "The recommender at 200 items: a study's Pareto front (`space=seqrec_compress`)",
     "The default shop searched like the 20,000-item one below (same space and recipes, full softmax).",
     recommender_study),
    ("recommender_20000_study.json", "The recommender at 20,000 items: a study's Pareto front (`space=seqrec_compress`)",
     "20,000 users × 20,000 items as in the table above, searched by `python -m search.sweep` with the recommender's "
     "compression space: every trial starts from the fold's cached fp32 model and runs its own fine-tune; speedup = "
     "reference latency / trial latency (the latency objective is the paired one).", recommender_study),
    ("recommender_user_features.json", "User profiles in the recommender, with and without (`benchmarks/recommender.py --methods fp32 fp32-no-user-features`)",
     "The synthetic shop's age band and interests as a user embedding added to the sequence state.", recommender),
    ("recommender_user_features_short.json", "User profiles with short histories (4-8 events, interest_mix 0.5)",
     "As above on users with few events, where a profile should matter most.", recommender),
    ("recommender_scale.json", "The recommender at catalogue scale: full vs sampled softmax (`benchmarks/recommender_scale.py`)",
     "One run per loss on the same generated shop; measured while other jobs shared the 2 cores (load 3-4, the run "
     "at low priority), so seconds are pessimistic. Neither model is converged after 2 epochs.", recommender_scale),
    ("scale.json", "Studies of 10,000 trials (`benchmarks/scale.py`)",
     "Squeeze's own bookkeeping on a study of N finished trials with their MLflow runs. *list*: `python -m "
     "search.pareto` as a cold subprocess (in brackets the same command with `--help`: interpreter start only); *tag*: `report.tag_runs` at "
     "the end of the sweep, writing only runs whose `pareto` tag changes; *overhead*: the worker loop's bookkeeping "
     "per trial with `search.ledger.StudyLedger` (delta reads), sampler excluded, against the full reads it "
     "replaces; *TPE*: one ask + parameter sampling + tell of the default sampler at that size. Measured while other jobs shared the 2 cores (load average ~4): a quieter run (same code less the two-run probe in `tag_runs`) gave list + tag 3.4 / 4.0 / 4.4 s and overhead 0.007 / 0.014 / 0.025 s per trial at 1k / 5k / 10k.", scale),
    ("latency.json", "Latency you can trust: paired speedups and the noise floor (`benchmarks/latency.py`)",
     "mlp and cnn on digits (trained 6 epochs, one fine-tune epoch per compressed setting, 75/25 split); every "
     "latency timed against fp32 in the same process in alternating blocks. seqrec is not in this run (its "
     "training does not fit the 5-minute budget on 2 cores).", latency),
    ("seqrec_breakdown_5000.json", "Where a seqrec request's time goes, 5,000 items (`benchmarks/seqrec_latency.py breakdown`)",
     "The recommender's forward at batch 1 cut after each stage and timed in torchscript and onnxruntime (random "
     "weights: latency does not depend on them); a stage's µs is the difference between consecutive cuts' medians, "
     "so a stage of a few µs can come out negative (noise). *full (before)*: the last block computes every position, "
     "the forward before `SeqRec.encode(last_only=True)`; *last position (now)*: only the last position, the forward "
     "served now. Item table fp32 or factored at rank 4 / 8 (scored as `(q @ Bᵀ) @ Aᵀ`). Factoring shrinks only the "
     "scoring product: the encoder plus per-call overhead (total − scores, ~57 µs in onnxruntime at this size) is "
     "paid whatever the item table, which caps the speedup a compressed table can give. Measured on a shared 2-core "
     "machine.", seqrec_breakdown),
    ("seqrec_breakdown_20000.json", "Where a seqrec request's time goes, 20,000 items (`benchmarks/seqrec_latency.py breakdown --items 20000`)",
     "As above with 20,000 items, where the scoring product is a larger share of a request.", seqrec_breakdown),
    ("seqrec_pareto_5000.json", "Compressed recommenders against fp32 through the real pipeline, 5,000 items (`benchmarks/seqrec_latency.py pareto`)",
     "Issue 11's done-means: `run_fold` trains the fp32 reference and builds compressed models from the same cached "
     "fp32 base; each is written as an artifact, loaded back, served on its fastest runtime and timed against the "
     "fp32 reference in alternating blocks. The fair speedup is against fp32 on its own fastest runtime; the "
     "torchscript column compares against fp32 on a slower runtime and is shown only for that contrast. At 5,000 "
     "items the best paired speedup within 1 pt is ~1.3–1.5×: issue 11's 2× is not reached, because the encoder "
     "plus per-call overhead (~57 µs, see the breakdown above) is paid whatever the item table. The fp32 "
     "reference's HR@10 is weak at this size (every compressed setting scores above it, one seed, one fold), so "
     "the Δ pt column flatters compression. Measured on a shared 2-core machine.", seqrec_pareto),
    ("seqrec_study_5000.json", "A seqrec study at 5,000 items (`python -m search.sweep`, `space=seqrec_compress`)",
     "A real study with the recommender's compression space; speedup is each trial's paired speedup against the "
     "fp32 reference artifact on its runtime (the latency objective), Pareto over (HR@10, size, latency). The "
     "table lists the front and the fastest trial within 1 pt. As in the table above, the best speedup within 1 pt "
     "stays at ~1.3× (issue 11's 2× is not reached: the encoder plus per-call overhead dominates a request at this "
     "size) and the fp32 reference's HR@10 is weak (most compressed trials score above it). Measured on a shared "
     "2-core machine.", seqrec_study),
    ("seqrec_study_20000.json", "A seqrec study at 20,000 items, last-position serving (`python -m search.sweep`, `space=seqrec_compress`)",
     "The 20,000-item study of issue 13 run again on today's build (last-position serving, cheaper fine-tune), same "
     "command: 20,000 users × 20,000 items, sampled softmax, 8 epochs, 2 user folds, 10 trials. At this size scoring "
     "is half of fp32's request, so small item tables pay: the front reaches issue 11's 2× at batch 1 within 1 pt, "
     "against the fp32 reference on its fastest runtime (onnxruntime). The A/A noise floor was high (the study ran "
     "beside the test suite for its first half), so latencies within it tie on the front. Measured on a shared "
     "2-core machine.", seqrec_study),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results.md"))
    args = parser.parse_args()
    parts = ["# Benchmark results", "",
             "Measured on the project's 2-core CPU machine (no GPU). Generated by `python benchmarks/render.py` from "
             "`benchmarks/results/*.json`; rerun with `make bench`. Timings on a shared 2-core machine are noisy "
             "(±10-20%).", ""]
    for file, title, text, render in SECTIONS:
        path = Path(args.results) / file
        if path.exists():
            parts += [f"## {title}", "", text, "", render(json.loads(path.read_text())), ""]
    Path(args.out).write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
