"""docs/BENCHMARKS.md's measured section and docs/bench.svg, from one run's figures.

`write(results, doc, svg)` replaces what lies between the two markers below in
`doc` (the rest of the file, such as the criterion figures, is kept) and
writes the plot. Every figure comes from `results` (bench.py's JSON); the
targets are issue 6's.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

BEGIN = "<!-- bench/bench.py writes from here -->"
END = "<!-- bench/bench.py writes up to here -->"

TARGET_B_OVER_A = 0.95
TARGET_P99_OVER_A = 1.10
TARGET_B_OVER_C = 2.0
TARGET_SCALING = 0.90
TARGET_COMPILE_S = 1.0
# Issue 15, target 4: B with many policies against one, and the scale files' compile time.
TARGET_MANY = 0.95
TARGET_SCALE_COMPILE_S = 2.0


class Spread:
    """The median of some runs, with their minimum and maximum."""

    def __init__(self, values: list[float]):
        self.values = sorted(values)
        self.median = statistics.median(values) if values else math.nan
        self.low = min(values) if values else math.nan
        self.high = max(values) if values else math.nan

    def __bool__(self) -> bool:
        return bool(self.values)

    def show(self, unit_format: str = "{:,.0f}") -> str:
        if not self.values:
            return "—"
        if len(self.values) == 1:
            return unit_format.format(self.median)
        return f"**{unit_format.format(self.median)}** ({unit_format.format(self.low)}–{unit_format.format(self.high)})"


def runs(results: dict, **match) -> list[dict]:
    return [run for run in results["runs"] if all(run.get(k) == v for k, v in match.items())]


def spread(results: dict, field: str, **match) -> Spread:
    return Spread([run[field] for run in runs(results, **match)])


QUIET = 0.9  # the path's share of the machine's busy time above which a run had the machine to itself


def paired_ratios(results: dict, field: str, phase: str, top: dict, bottom: dict, quiet: bool = False) -> Spread:
    """`top / bottom` round by round (the runs of one round ran minutes apart, not hours); with
    `quiet`, only the rounds in which both runs had the machine to themselves."""
    ratios = []
    for round_index in range(max(results["rounds"], results["scaling_rounds"])):
        upper = runs(results, phase=phase, round=round_index, **top)
        lower = runs(results, phase=phase, round=round_index, **bottom)
        if upper and lower and (not quiet or min(upper[0]["path_share"], lower[0]["path_share"]) >= QUIET):
            ratios.append(upper[0][field] / lower[0][field])
    return Spread(ratios)


def ratio(top: Spread, bottom: Spread) -> float:
    return top.median / bottom.median if top and bottom else math.nan


def number(value: float, spec: str = "{:.3f}") -> str:
    """`value` formatted, or a dash where a configuration did not run."""
    return "—" if math.isnan(value) else spec.format(value)


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("**met**" if met else "**missed**")


def percent(value: float) -> str:
    return f"{value * 100:+.1f} %"


def judged(name: str, value: float, rounds: Spread, at_least: float | None = None,
           at_most: float | None = None) -> tuple[str, str, str, str, bool | None, str]:
    """One row of the targets table: (target, measured, rounds, verdict, met, by how much)."""
    if math.isnan(value):
        return (name, "—", "—", "not measured", None, "")
    met = value >= at_least if at_least is not None else value <= at_most
    threshold = at_least if at_least is not None else at_most
    if met:
        by = ""
    elif at_least is not None:
        by = f"{(threshold - value) / threshold * 100:.1f} % short of {threshold:g}"
    else:
        by = f"{(value - threshold) / threshold * 100:.1f} % over {threshold:g}"
    spread_text = f"{rounds.low:.2f}–{rounds.high:.2f}" if rounds else "—"
    if rounds and len(rounds.values) > 1 and not (
            (at_least is not None and (rounds.low >= at_least) == (rounds.high >= at_least)) or
            (at_most is not None and (rounds.low <= at_most) == (rounds.high <= at_most))):
        spread_text += " (rounds disagree)"
    return (name, f"{value:.3f}", spread_text, verdict(met), met, by)


def targets(results: dict) -> list[tuple[str, str, str, str, bool | None, str]]:
    """Issue 6's targets, each judged on the medians; where requests/s are judged, the same ratio
    from CPU per request follows (requests/s of a CPU-bound path, immune to other work on the VM)."""
    def compare(field: str, connections: int, top: str, bottom: str) -> tuple[float, Spread]:
        value = ratio(spread(results, field, phase="compare", config=top, connections=connections),
                      spread(results, field, phase="compare", config=bottom, connections=connections))
        rounds = paired_ratios(results, field, "compare", {"config": top, "connections": connections},
                               {"config": bottom, "connections": connections})
        return value, rounds

    def inverse(value: float, rounds: Spread) -> tuple[float, Spread]:
        return 1 / value, Spread([1 / r for r in rounds.values])

    def scaling(field: str) -> tuple[float, Spread]:
        value = ratio(spread(results, field, phase="policy", config="B", rules=10000),
                      spread(results, field, phase="policy", config="B", rules=10))
        rounds = paired_ratios(results, field, "policy", {"config": "B", "rules": 10000},
                               {"config": "B", "rules": 10})
        return value, rounds

    rows = [
        judged("B ≥ 0.95 × A requests/s (16 connections)", *compare("rps", 16, "B", "A"), at_least=TARGET_B_OVER_A),
        judged("the same from CPU per request (A's / B's)", *inverse(*compare("cpu_per_10k", 16, "B", "A")),
               at_least=TARGET_B_OVER_A),
        judged("B's p99 within 10 % of A's (1 connection): B/A", *compare("p99_us", 1, "B", "A"),
               at_most=TARGET_P99_OVER_A),
        judged("B ≥ 2 × C requests/s", *compare("rps", 16, "B", "C"), at_least=TARGET_B_OVER_C),
        judged("the same from CPU per request (C's / B's)", *inverse(*compare("cpu_per_10k", 16, "B", "C")),
               at_least=TARGET_B_OVER_C),
        judged("B's CPU per request below C's: B/C", *compare("cpu_per_10k", 16, "B", "C"), at_most=0.999),
        judged("B at 10,000 rules ≥ 0.9 × B at 10 rules (requests/s)", *scaling("rps"), at_least=TARGET_SCALING),
        judged("the same from CPU per request (10's / 10,000's)", *inverse(*scaling("cpu_per_10k")),
               at_least=TARGET_SCALING),
        judged("the same without `l7c run`'s own CPU: the kernel path", *inverse(*scaling("cpu_per_10k_in_path")),
               at_least=TARGET_SCALING),
    ]
    many = many_targets(results)
    rows += many
    thousand = next((c for c in results["compile"] if c["rules"] == 1000), None)
    if thousand:
        loads = "processed" in thousand and thousand.get("loaded", True)
        met = thousand["compile_s"] < TARGET_COMPILE_S and loads
        measured = f"{thousand['compile_s']:.3f} s; " + (
            f"verified, {thousand['processed']:,} processed" if "processed" in thousand else "not verified")
        if thousand.get("loaded"):
            measured += "; `l7c run` loaded it"
        rows.append(("1,000 rules compile in < 1 s and load", measured, "", verdict(met), met,
                     "" if met else (thousand.get("verify_error") or thousand.get("load_error") or "too slow")))
    return rows


def many_targets(results: dict) -> list[tuple[str, str, str, str, bool | None, str]]:
    """Issue 15, target 4: many policies in one program."""
    rows = []
    most = max((f["policies"] for f in results.get("many", [])), default=0)
    if most > 1 and runs(results, phase="many", config="B", policies=most):
        value = ratio(spread(results, "rps", phase="many", config="B", policies=most),
                      spread(results, "rps", phase="many", config="B", policies=1))
        rounds = paired_ratios(results, "rps", "many", {"config": "B", "policies": most}, {"config": "B", "policies": 1})
        rows.append(judged(f"B with api30 the last of {most} policies ≥ 0.95 × B with api30 alone (requests/s)",
                           value, rounds, at_least=TARGET_MANY))
        cpu = ratio(spread(results, "cpu_per_10k", phase="many", config="B", policies=1),
                    spread(results, "cpu_per_10k", phase="many", config="B", policies=most))
        cpu_rounds = paired_ratios(results, "cpu_per_10k", "many", {"config": "B", "policies": 1},
                                   {"config": "B", "policies": most})
        rows.append(judged("the same from CPU per request (1's / the many's)", cpu, cpu_rounds, at_least=TARGET_MANY))
    by_count = {f["policies"]: f for f in results.get("many", [])}
    if 1 in by_count and most in by_count and "instructions" in by_count[1] and "instructions" in by_count[most]:
        one, all_ = by_count[1], by_count[most]
        grown = all_["instructions"] - one["instructions"]
        met = grown <= 8 * (most - 1)
        rows.append((f"program size flat in policies: {most} policies ≤ 1 policy + 8 instructions each",
                     f"{one['instructions']:,} → {all_['instructions']:,} instructions "
                     f"({grown / max(most - 1, 1):.1f} a policy); processed {one.get('processed', 0):,} → "
                     f"{all_.get('processed', 0):,}", "", verdict(met), met, "" if met else "grows"))
    files = results.get("scale_files", [])
    if files:
        loads = all("processed" in f for f in files)
        slowest = max(f["compile_s"] for f in files)
        met = loads and slowest < TARGET_SCALE_COMPILE_S
        measured = "; ".join(f"{f['file']} {f['compile_s']:.2f} s, "
                             + (f"{f['processed']:,} processed" if "processed" in f else "not verified") for f in files)
        rows.append(("the scale files and 100 × 20 compile in < 2 s and load", measured, "", verdict(met), met,
                     "" if met else next((f.get("verify_error", "") for f in files if "processed" not in f), "too slow")))
    return rows


def many_table(results: dict) -> list[str]:
    one = spread(results, "rps", phase="many", config="B", policies=1)
    lines = scaled_table(results, "many", results.get("many", []), "policies",
                         before=[("B / B with one policy", lambda b, figures: number(ratio(b, one)))])
    files = results.get("scale_files", [])
    if files:
        lines += ["", "| scale file | compile (s) | instructions | verifier processed | tables (bytes) |",
                  "|---|---:|---:|---:|---:|"]
        for f in files:
            lines.append(f"| `tests/scale/{f['file']}` | {program_cells(f)} |")
    return lines


NAMES = {
    "A": "A: wrk → nginx",
    "B0": "B0: the same, enrolled, nothing governed",
    "B": "B: wrk → nginx, `l7c run` api30",
    "C": "C: wrk → HAProxy → nginx",
}


def compare_table(results: dict) -> list[str]:
    lines = [
        "| | requests/s, 16 connections | p50 latency, 1 connection | p99 latency, 1 connection "
        "| CPU s per 10,000 requests (path) | same, whole machine | path's share of the machine |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for config in ("A", "B0", "B", "C"):
        rps = spread(results, "rps", phase="compare", config=config, connections=16)
        if not rps:
            lines.append(f"| {NAMES[config]} | skipped | | | | | |")
            continue
        cells = [rps.show()] + [
            spread(results, field, phase="compare", config=config, connections=connections).show(shape)
            for field, connections, shape in (("p50_us", 1, "{:,.0f} µs"), ("p99_us", 1, "{:,.0f} µs"),
                                              ("cpu_per_10k", 16, "{:.3f}"), ("machine_cpu_per_10k", 16, "{:.3f}"),
                                              ("path_share", 16, "{:.0%}"))]
        lines.append(f"| {NAMES[config]} | " + " | ".join(cells) + " |")
    return lines


def ratio_lines(results: dict) -> list[str]:
    lines = ["| ratio | of the medians | round by round (min–max) | in quiet rounds | target |",
             "|---|---:|---:|---:|---|"]
    for name, field, connections, top, bottom, target in (
        ("B/A requests/s", "rps", 16, "B", "A", "≥ 0.95"),
        ("B/A p99", "p99_us", 1, "B", "A", "≤ 1.10"),
        ("B/A CPU per request", "cpu_per_10k", 16, "B", "A", ""),
        ("B0/A requests/s", "rps", 16, "B0", "A", ""),
        ("B0/A CPU per request", "cpu_per_10k", 16, "B0", "A", ""),
        ("B/C requests/s", "rps", 16, "B", "C", "≥ 2"),
        ("B/C CPU per request", "cpu_per_10k", 16, "B", "C", "< 1"),
    ):
        medians = ratio(spread(results, field, phase="compare", config=top, connections=connections),
                        spread(results, field, phase="compare", config=bottom, connections=connections))
        rounds = paired_ratios(results, field, "compare", {"config": top, "connections": connections},
                               {"config": bottom, "connections": connections})
        shown = f"{rounds.low:.3f}–{rounds.high:.3f}" if rounds else "—"
        quiet = paired_ratios(results, field, "compare", {"config": top, "connections": connections},
                              {"config": bottom, "connections": connections}, quiet=True)
        quiet_shown = ", ".join(f"{v:.3f}" for v in quiet.values) if quiet else "none"
        lines.append(f"| {name} | {number(medians)} | {shown} | {quiet_shown} | {target} |")
    return lines


def program_cells(figures: dict) -> str:
    """compile (s) | instructions | verifier processed | tables (bytes), for one compiled program."""
    if "processed" not in figures:
        return f"{figures['compile_s']:.3f} | — | not verified | —"
    return (f"{figures['compile_s']:.3f} | {figures.get('instructions', 0):,} | {figures['processed']:,} "
            f"| {figures.get('table_bytes', 0):,}")


def scaled_table(results: dict, phase: str, rows: list[dict], key: str,
                 before: list[tuple[str, object]] = (), after: list[tuple[str, object]] = ()) -> list[str]:
    """One row per compiled program of `phase` (`rows`, each labelled by its `key`): its program cells,
    B at 16 connections, the `before` columns, B/A, CPU per request, the `after` columns; then A's row.
    `before` and `after` are (heading, cell) pairs, `cell(b, figures)` giving the text."""
    a = spread(results, "rps", phase=phase, config="A")
    extra = lambda columns, b, figures: "".join(f"| {cell(b, figures)} " for _, cell in columns)
    lines = [
        f"| {key} | compile (s) | instructions | verifier processed | tables (bytes) | B requests/s, 16 connections "
        + "".join(f"| {head} " for head, _ in before) + "| B/A | CPU s per 10,000 requests "
        + "".join(f"| {head} " for head, _ in after) + "|",
        "|---:" * (8 + len(before) + len(after)) + "|",
    ]
    for figures in rows:
        match = {key: figures[key]}
        b = spread(results, "rps", phase=phase, config="B", **match)
        cpu = spread(results, "cpu_per_10k", phase=phase, config="B", **match)
        b_shown = b.show() if b else ("not loaded" if figures.get("loaded") is False else "skipped")
        lines.append(f"| {figures[key]:,} | {program_cells(figures)} | {b_shown} {extra(before, b, figures)}"
                     f"| {number(ratio(b, a))} | {cpu.show('{:.3f}')} {extra(after, b, figures)}|")
    if a:
        lines.append(f"| A (no policy) | | | | | {a.show()} " + "| " * len(before) + "| 1 | "
                     f"{spread(results, 'cpu_per_10k', phase=phase, config='A').show('{:.3f}')} "
                     + "| " * len(after) + "|")
    return lines


def policy_table(results: dict) -> list[str]:
    return scaled_table(results, "policy", results["compile"], "rules",
                        after=[("of which `l7c run`", lambda b, figures: agent_share(results, figures["rules"]))])


def agent_share(results: dict, rules: int) -> str:
    """The CPU `l7c run` itself used during the B runs, per 10,000 requests (median)."""
    shares = [sum(v for role, v in run["cpu_by_role"].items() if role.startswith("agent")) / run["requests"] * 1e4
              for run in runs(results, phase="policy", config="B", rules=rules)]
    return Spread(shares).show("{:.3f}") if shares else "—"


def head_table(results: dict) -> list[str]:
    """Per head (padded to a size, or a realistic kind of bench/heads/): A, B0, B and C side by side,
    with issue 15's targets (B/B0 ≥ 0.95 on the realistic heads and ≥ 0.97 on the small one,
    B ≥ 2 × C at every size, B/A ≥ 0.6 at 16 KiB)."""
    lines = [
        "| head | A requests/s | B0 requests/s | B requests/s | C requests/s | B/A | B/B0 | B/C "
        "| CPU µs/request A / B0 / B | socket map path (B0 − A) | the program (B − B0) | program, ns per head byte |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    heads = sorted({(run["head_bytes"], run.get("head_kind") or "") for run in runs(results, phase="head")})
    for size, kind in heads:
        match = {"phase": "head", "head_bytes": size, "head_kind": kind or None}
        rps = {c: spread(results, "rps", config=c, **match) for c in ("A", "B0", "B", "C")}
        # CPU s per 10,000 requests × 100 = µs per request.
        cpu = {c: (spread(results, "cpu_per_10k", config=c, **match).median * 100 if rps[c] else math.nan)
               for c in ("A", "B0", "B")}
        label = f"{size:,} B" + (f" ({kind})" if kind else "")
        lines.append(
            f"| {label} | {rps['A'].show()} | {rps['B0'].show() if rps['B0'] else 'skipped'} "
            f"| {rps['B'].show() if rps['B'] else 'skipped'} | {rps['C'].show() if rps['C'] else 'skipped'} "
            f"| {number(ratio(rps['B'], rps['A']))} | {number(ratio(rps['B'], rps['B0']))} "
            f"| {number(ratio(rps['B'], rps['C']), '{:.2f}')} "
            f"| {number(cpu['A'], '{:.1f}')} / {number(cpu['B0'], '{:.1f}')} / {number(cpu['B'], '{:.1f}')} "
            f"| {number(cpu['B0'] - cpu['A'], '{:+.1f} µs')} | {number(cpu['B'] - cpu['B0'], '{:+.1f} µs')} "
            f"| {number((cpu['B'] - cpu['B0']) * 1000 / size, '{:.0f}')} |")
    return lines


def all_runs_table(results: dict) -> list[str]:
    lines = ["| phase | round | config | connections | rules | head | requests/s | p50 µs | p99 µs "
             "| CPU s/10k (path) | by cgroup (s) | CPU s/10k (machine) | path's share |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for run in results["runs"]:
        by_role = ", ".join(f"{role} {seconds}" for role, seconds in run["cpu_by_role"].items())
        lines.append(
            f"| {run['phase']} | {run.get('round', '')} | {run['config']} | {run['connections']} "
            f"| {run.get('rules', '')} | {run['head_bytes'] or ''} | {run['rps']:,.0f} | {run['p50_us']} "
            f"| {run['p99_us']} | {run['cpu_per_10k']:.3f} | {by_role} | {run['machine_cpu_per_10k']:.3f} "
            f"| {run['path_share']:.0%} |")
    return lines


def section(results: dict) -> str:
    v = results.get("versions", {})
    load = results.get("load", {})
    quick = " **Quick mode (`L7C_BENCH_QUICK=1`): indicative only.**" if results.get("quick") else ""
    out = [
        BEGIN,
        "",
        f"Run of {results['date']}: {results['rounds']} rounds of {results['seconds']:g}-second runs for A B C, "
        f"{results['scaling_rounds']} for the scaling tables, {results.get('elapsed_s', '?')} s in all.{quick} "
        f"Machine: {v.get('cpus', '?')} vCPU ({v.get('cpu', '?')}), a VM shared with other work, Linux "
        f"{v.get('kernel', '?')}; {v.get('nginx', '')}, {v.get('haproxy', '')}, {v.get('wrk', '')}; "
        f"l7c at commit {v.get('l7c_commit', '?')} (release). Load average (1, 5, 15 min) at the start "
        f"{load.get('compare_start', '?')}, at the end {load.get('head_end', load.get('compare_end', '?'))}.",
        "",
    ]
    if results["skipped"]:
        for what, reason in results["skipped"].items():
            out += [f"**SKIPPED {what}**: {reason}. Its columns say so; no figure stands in for it.", ""]
    out += ["### Targets", "",
            "Ratios of the medians; \"rounds\" gives the ratio within each round (runs a minute apart), "
            "lowest and highest.", "",
            "| target | measured | rounds | | by how much |", "|---|---|---|---|---|"]
    for target, measured, rounds, shown, _, by in targets(results):
        out.append(f"| {target} | {measured} | {rounds} | {shown} | {by} |")
    out += [
        "", "### Enforcement cost: A, B, C interleaved", "",
        "Medians over the rounds, min–max in parentheses. Requests/s and CPU from the 16-connection runs, "
        "latency from the 1-connection runs.", "",
        "B0 runs `l7c run bench/pass-all.l7`: wrk's connections are enrolled in the socket map, but the "
        "policy's scope (remote port 1) selects none of them, so the program passes each connection for good "
        "on its first message: B0 − A is the cost of the socket map's `sendmsg` path, B − B0 that of the HTTP "
        "program.", "",
        *compare_table(results), "",
        f"\"In quiet rounds\": the ratio in each round where both runs had the machine to themselves (the "
        f"path's CPU at least {QUIET:.0%} of the machine's busy time), where requests/s are the path's own.", "",
        *ratio_lines(results), "",
        "![requests/s of A, B and C; B against policy size and head size](bench.svg)", "",
        "### Scaling with the policy", "",
        "Generated policies (`bench/genpolicy.py N`): N − 1 rules over their own `/svc<i>` paths (methods, "
        "exact paths, prefixes, globs, header tests, `not`, allow and deny), then `user`, the rule that allows "
        "the benchmark request, so the request meets every other rule first. Compile: the release binary, "
        "median of 3, process start-up and checking included; instructions and processed from "
        "`l7c compile --emit report --verify`. A is measured in the same rounds.", "",
        *policy_table(results), "",
        "### Many policies in one program (issue 15, target 4)", "",
        "api30.l7 as the last of 1, 20 and 100 policies in one file (`bench/genpolicy.py`, `many`): the others "
        "have 20 rules each, in the rule shape of ../shared/bench/scale, on ports of their own, so every "
        "connection passes their scope tests once and every request is judged by api30. One `l7c run` at a "
        "time, started again each round; A in the same rounds. Below it, the scale files (`tests/scale/`: "
        "multi5 and multi20 from ../shared/bench/scale, and 100 policies of 20 rules from "
        "`tests/scale/generate.py`) compiled and verified.", "",
        *many_table(results), "",
        "### Scaling with the request head", "",
        "api30.l7 with `limits { header_bytes 16KiB }` added (the default, 8 KiB, refuses a 16 KiB head); the "
        f"benchmark request padded with `X-Pad<k>` fields (at most 4,000 bytes each) to exactly the size shown "
        f"(checked by reading what wrk sends: {results.get('heads', {})}), and two realistic heads "
        "(`bench/heads/`, the same fields as `runtime/examples/program_cost.rs`): a browser's (user agent, "
        "accept-*, a session cookie, sec-fetch-*) and an API client's with a 1 KiB bearer token. C (HAProxy, "
        "`tune.bufsize 32768` so that the 16 KiB head fits) at every head. Issue 15's targets: B/B0 ≥ 0.95 on "
        "the realistic heads and ≥ 0.97 on the small one; B ≥ 2 × C at every head; B/A ≥ 0.6 at 16 KiB. "
        "16 connections; CPU for the whole path, in µs per request (CPU s per 10,000 requests × 100), medians.",
        "", *head_table(results), "",
        "<details><summary>Every run</summary>", "", *all_runs_table(results), "", "</details>", "",
        END,
    ]
    return "\n".join(out)


def derive(results: dict) -> None:
    """Adds each run's CPU per 10,000 requests without `l7c run`'s own (its polling is per second,
    not per request)."""
    for run in results["runs"]:
        agent = sum(v for role, v in run["cpu_by_role"].items() if role.startswith("agent"))
        run["cpu_per_10k_in_path"] = (run["cpu_s"] - agent) / run["requests"] * 1e4
        # Near 100 %: nothing else ran; the requests/s of such a run are the path's own.
        run["path_share"] = run["cpu_per_10k"] / run["machine_cpu_per_10k"] if run["machine_cpu_per_10k"] else math.nan


def write(results: dict, doc: Path, svg: Path) -> None:
    derive(results)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    generated = section(results)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    doc.write_text(text)
    svg.write_text(plot(results))


# -- the plot ----------------------------------------------------------------------------------

def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Panel:
    """One chart: a frame, a y axis from 0 to a round maximum, labelled points or bars."""

    def __init__(self, x: float, y: float, width: float, height: float, title: str, top: float,
                 tick=lambda value: f"{value / 1000:g}k"):
        self.x, self.y, self.width, self.height = x, y, width, height
        step = 10 ** math.floor(math.log10(top)) if top > 0 else 1
        self.top = math.ceil(top * 1.1 / step) * step if top > 0 else 1
        self.parts = [f'<text x="{x + width / 2}" y="{y - 12}" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
                      f'<rect x="{x}" y="{y}" width="{width}" height="{height}" fill="none" stroke="#999"/>']
        for step_index in range(5):
            value = self.top * step_index / 4
            ty = self.ypos(value)
            self.parts.append(f'<line x1="{x}" x2="{x + width}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#eee"/>')
            self.parts.append(f'<text x="{x - 4}" y="{ty + 4:.1f}" text-anchor="end" font-size="10">{tick(value)}</text>')

    def ypos(self, value: float) -> float:
        return self.y + self.height - value / self.top * self.height

    def whisker(self, cx: float, s: Spread, colour: str) -> None:
        if s and s.high > s.low:
            self.parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{self.ypos(s.low):.1f}" y2="{self.ypos(s.high):.1f}" '
                              f'stroke="{colour}" stroke-width="1.5"/>')
            for v in (s.low, s.high):
                self.parts.append(f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{self.ypos(v):.1f}" y2="{self.ypos(v):.1f}" '
                                  f'stroke="{colour}" stroke-width="1.5"/>')

    def label_x(self, cx: float, text: str) -> None:
        self.parts.append(f'<text x="{cx:.1f}" y="{self.y + self.height + 14}" text-anchor="middle" font-size="11">{escape(text)}</text>')

    def series(self, points: list[tuple[float, Spread]], colour: str, name: str, legend_row: int,
               legend_x: float = 8, legend_bottom: bool = False) -> None:
        shown = [(cx, s) for cx, s in points if s]
        if len(shown) > 1:
            path = " ".join(f"{cx:.1f},{self.ypos(s.median):.1f}" for cx, s in shown)
            self.parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for cx, s in shown:
            self.whisker(cx, s, colour)
            self.parts.append(f'<circle cx="{cx:.1f}" cy="{self.ypos(s.median):.1f}" r="3.5" fill="{colour}"/>')
        ly = self.y + self.height - 10 - 14 * legend_row if legend_bottom else self.y + 14 + 14 * legend_row
        lx = self.x + legend_x
        self.parts.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        self.parts.append(f'<text x="{lx + 20}" y="{ly}" font-size="11">{escape(name)}</text>')


COLOURS = {"A": "#4c72b0", "B0": "#c8a2c8", "B": "#dd8452", "C": "#55a868"}


def bars(panel: Panel, values: dict[str, Spread], label) -> Panel:
    """One bar per configuration: the median, whiskers from the minimum to the maximum."""
    for index, config in enumerate(("A", "B0", "B", "C")):
        s = values[config]
        cx = panel.x + 33 + index * 58
        if s:
            panel.parts.append(f'<rect x="{cx - 18}" y="{panel.ypos(s.median):.1f}" width="36" '
                               f'height="{panel.y + panel.height - panel.ypos(s.median):.1f}" fill="{COLOURS[config]}"/>')
            panel.whisker(cx, s, "#333")
            panel.parts.append(f'<text x="{cx}" y="{panel.ypos(s.high) - 6:.1f}" text-anchor="middle" '
                               f'font-size="10">{label(s.median)}</text>')
        panel.label_x(cx, {"A": "A nginx", "B0": "B0 map", "B": "B l7c", "C": "C HAProxy"}[config]
                      if s else f"{config}: skipped")
    return panel


def plot(results: dict) -> str:
    width, height = 1250, 330
    compare = {c: spread(results, "rps", phase="compare", config=c, connections=16) for c in ("A", "B0", "B", "C")}
    rules = [c["rules"] for c in results["compile"]]
    policy_a = spread(results, "rps", phase="policy", config="A")
    policy_b = [spread(results, "rps", phase="policy", config="B", rules=n) for n in rules]
    sizes = sorted({run["head_bytes"] for run in runs(results, phase="head")})
    head = {c: [spread(results, "rps", phase="head", config=c, head_bytes=s) for s in sizes] for c in ("A", "B0", "B", "C")}
    everything = [s.high for s in [*compare.values(), policy_a, *policy_b, *head["A"], *head["B0"], *head["B"], *head["C"]]
                  if s]
    top = max(everything, default=1)

    panels = [bars(Panel(60, 40, 240, 240, "requests/s, 16 connections", top), compare,
                   lambda v: f"{v / 1000:.1f}k")]
    cpu = {c: Spread([v * 100 for v in spread(results, "cpu_per_10k", phase="compare", config=c,
                                              connections=16).values]) for c in ("A", "B0", "B", "C")}
    panels.append(bars(Panel(360, 40, 240, 240, "CPU µs per request (whole path)",
                             max((s.high for s in cpu.values() if s), default=1), tick=lambda v: f"{v:g}"),
                       cpu, lambda v: f"{v:.1f}"))

    second = Panel(660, 40, 260, 240, "B requests/s by policy size (rules)", top)
    xs = [second.x + 30 + i * (second.width - 60) / max(len(rules) - 1, 1) for i in range(len(rules))]
    for cx, n in zip(xs, rules):
        second.label_x(cx, f"{n:,}")
    if policy_a:
        ay = second.ypos(policy_a.median)
        second.parts.append(f'<line x1="{second.x}" x2="{second.x + second.width}" y1="{ay:.1f}" y2="{ay:.1f}" '
                            f'stroke="{COLOURS["A"]}" stroke-dasharray="5,4"/>')
    second.series(list(zip(xs, policy_b)), COLOURS["B"], "B; A (no policy) dashed", 0, legend_bottom=True)
    panels.append(second)

    third = Panel(980, 40, 240, 240, "requests/s by head size (bytes)", top)
    xs = [third.x + 30 + i * (third.width - 60) / max(len(sizes) - 1, 1) for i in range(len(sizes))]
    for cx, size in zip(xs, sizes):
        third.label_x(cx, f"{size:,}")
    third.series(list(zip(xs, head["A"])), COLOURS["A"], "A no policy", 0, legend_x=90)
    third.series(list(zip(xs, head["B0"])), COLOURS["B0"], "B0 enrolled, not governed", 1, legend_x=90)
    third.series(list(zip(xs, head["B"])), COLOURS["B"], "B l7c, api30 (16 KiB)", 2, legend_x=90)
    third.series(list(zip(xs, head["C"])), COLOURS["C"], "C HAProxy", 3, legend_x=90)
    panels.append(third)

    body = "\n".join(part for panel in panels for part in panel.parts)
    caption = (f"l7c benchmark, {results['date']}: medians, whiskers min–max "
               f"({results['rounds']} rounds; scaling {results['scaling_rounds']})")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n{body}\n'
            f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle" font-size="11" fill="#555">{escape(caption)}</text>\n'
            f'</svg>\n')


def sample_results() -> dict:
    """A small made-up run (two rounds) for bench.py --check to render: never written to docs/."""
    results = {"date": "sample", "quick": True, "seconds": 1, "rounds": 2, "scaling_rounds": 1, "runs": [],
               "skipped": {}, "probes": [], "heads": {}, "load": {}, "versions": {},
               "compile": [{"rules": n, "compile_s": 0.1, "instructions": 1000, "processed": 10000,
                            "table_bytes": 1, "loaded": True} for n in (10, 1000, 10000)]}

    def run(phase: str, config: str, connections: int, **labels) -> dict:
        return {"phase": phase, "config": config, "connections": connections, "head_bytes": None, "requests": 1,
                "seconds": 1, "rps": 1000.0 + len(results["runs"]), "p50_us": 10, "p99_us": 20, "cpu_s": 1,
                "cpu_per_10k": 0.5, "machine_cpu_per_10k": 0.6, "cpu_by_role": {"client": 1}, **labels}

    for round_index in range(2):
        for connections in (16, 1):
            for config in ("A", "B0", "B", "C"):
                results["runs"].append(run("compare", config, connections, round=round_index))
    results["runs"].append(run("policy", "A", 16, round=0, rules=0))
    for n in (10, 1000, 10000):
        results["runs"].append(run("policy", "B", 16, round=0, rules=n))
    for size in (100, 16384):
        for config in ("A", "B0", "B"):
            results["runs"].append({**run("head", config, 16, round=0), "head_bytes": size})
    results["many"] = [{"policies": n, "compile_s": 0.1, "instructions": 5000 + n, "processed": 70000 + n,
                        "table_bytes": 1, "loaded": True} for n in (1, 100)]
    results["scale_files"] = [{"file": "multi5.l7", "compile_s": 0.1, "instructions": 5000, "processed": 70000,
                               "table_bytes": 1}]
    results["runs"].append(run("many", "A", 16, round=0, policies=0))
    for n in (1, 100):
        results["runs"].append(run("many", "B", 16, round=0, policies=n))
    return results
