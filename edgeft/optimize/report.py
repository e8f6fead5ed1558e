"""The ``edgeft optimize`` report: what each stage bought and what it cost, side by side, rendered from one set of
data into ``report.md`` (for a repository or a CI log) and ``report.html`` (self-contained: inline SVG and CSS,
nothing fetched, for forwarding) through the Jinja2 templates beside this module. Rows are collected by
:mod:`edgeft.optimize.rows`, gates judged by :mod:`edgeft.optimize.gates`, charts drawn by
:mod:`edgeft.optimize.charts`; this module writes sentences and tables and renders them."""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft.bench.harness import cpu_runtime_text
from edgeft.errors import EdgeftError
from edgeft.metrics import paired_drop
from edgeft.optimize.charts import pareto_svg, pr_svg, quality_name, roc_svg, search_svg, training_svg
from edgeft.optimize.gates import GateVerdict
from edgeft.optimize.rows import Row, final, fmt, p50_ms, rate_text, ratio_text, reference, round_ratios

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Mark:
    """A table cell with a meaning beyond its text: ``style`` strong (emphasis, a shipped candidate) or a gate's
    status (pass, fail, skip); ``prefix`` is emphasised before the text. Markdown and HTML each render it their way,
    so no Markdown reaches the HTML."""

    text: str
    style: str = ""
    prefix: str = ""


def headline(rows: list[Row], gates: list[GateVerdict],
             cpu_runtimes: dict[str, Any] | None = None) -> list[str]:
    """Plain sentences: what the last model gained over the fine-tuned one, and the gates."""
    out = []
    last = final(rows, lambda r: r.measured)
    base = rows[0]
    if last is not None and last is not base and base.measured:
        smaller = f"; {base.size_bytes / last.size_bytes:.1f}x smaller" if last.size_bytes and base.size_bytes else ""
        if base.accuracy and last.accuracy:
            out.append(f"Final model {last.step} ({last.label}): accuracy {last.accuracy.accuracy * 100:.2f}% vs "
                       f"{base.accuracy.accuracy * 100:.2f}% {base.label} "
                       f"({(last.accuracy.accuracy - base.accuracy.accuracy) * 100:+.2f} pp), balanced "
                       f"{last.accuracy.balanced_accuracy * 100:.2f}% vs {base.accuracy.balanced_accuracy * 100:.2f}%"
                       + smaller + ".")
        elif base.anomaly and base.decisions and last.decisions:
            f, b = last.decisions.auroc, base.decisions.auroc
            out.append(f"Final model {last.step} ({last.label}): {last.split} AUROC {f:.3f} vs {b:.3f} for "
                       f"{base.label} ({f - b:+.3f})" + smaller + ".")
        elif base.quality is not None and last.quality is not None:
            out.append(f"Final model {last.step} ({last.label}): {last.quality_name} {last.quality:.4f} vs "
                       f"{base.quality:.4f} for {base.label}" + smaller + ".")
        for k in last.latency:
            b = last.latency[k]
            ref = reference(rows, k)
            if b["status"] == "ok" and ref is not None and ref is not last:
                ref_ms = p50_ms(ref.latency[k])
                spread = ratio_text(ref.latency[k], b)
                out.append(f"On {k}: {p50_ms(b):.2f} ms p50, {ref_ms / p50_ms(b):.2f}x faster "
                           f"than {ref.label} ({ref_ms:.2f} ms" + (f"; {spread}" if spread else "") + ").")
        shipped = runtime_sentence(rows, last)
        if shipped:
            out.append(shipped)
        eager = base.latency.get("torch@1")
        shipped_key = f"{(last.runtime or {}).get('backend')}@1"  # where it ships, else the first benched at batch 1
        fk = shipped_key if last.latency.get(shipped_key, {}).get("status") == "ok" else \
            next((k for k in last.latency if k.endswith("@1") and last.latency[k]["status"] == "ok"), None)
        if eager and eager["status"] == "ok" and fk and fk != "torch@1":
            spread = ratio_text(eager, last.latency[fk])
            out.append(f"Against PyTorch eager FP32 (batch 1): {p50_ms(eager) / p50_ms(last.latency[fk]):.1f}x "
                       f"faster on {fk}" + (f" ({spread})" if spread else "") + ".")
    if last is not None and last.policy and base.policy:
        f, b = last, base
        positive = f" (not OK = {' + '.join(f.decisions.positive)}; " if f.decisions else " ("
        out.append(f"Decisions on {last.split}{positive}each model's threshold "
                   f"chosen on val; 95% Wilson intervals): final recall "
                   f"{rate_text(f.policy.recall, f.policy.recall_interval)} of {f.policy.n_positive} at "
                   f"{rate_text(f.policy.false_reject, f.policy.false_reject_interval)} false rejects of "
                   f"{f.policy.n_negative}" + (f", {f.policy.review_rate * 100:.1f}% reviewed" if f.policy.reviewed
                                               else "")
                   + (f", AUROC {f.decisions.auroc:.3f}" if f.decisions else "") + f"; {base.label} "
                   f"{rate_text(b.policy.recall, b.policy.recall_interval)} at "
                   f"{rate_text(b.policy.false_reject, b.policy.false_reject_interval)}"
                   + (f", AUROC {b.decisions.auroc:.3f}." if b.decisions else "."))
    for r in rows:
        if r.pruning:
            out.append(f"Pruning ({r.step}) {r.pruning.text()}.")
    ships_on = {r.step: (r.runtime or {}).get("backend") for r in rows}
    for model, record in (cpu_runtimes or {}).items():
        text = cpu_runtime_text(Path(model).name, record)
        pinned = ships_on.get(Path(model).name)
        if pinned and pinned != record.get("fastest"):  # the bench's few rounds against the search's choice
            text += (f"; it ships on {pinned}, the search's choice, where its threshold was chosen (`edgeft bench "
                     f"--rounds 15` measures the two on this machine)")
        out.append(text[0].upper() + text[1:] + ".")
    if gates:
        failed = [g for g in gates if g.status == "fail"]
        out.append("Gates: " + ("FAILED — " + "; ".join(f"{g.gate} = {g.value} (limit {g.limit})"
                                                         if g.value is not None else f"{g.gate}: {g.detail}"
                                                         for g in failed)
                                if failed else "all passed" if all(gates) else "passed where evaluated"))
    return out


CHOSEN_BY = {"search": "search", "ship": "ship step"}  # what a runtime record's chosen_by is called in the report


def runtime_sentence(rows: list[Row], last: Row) -> str:
    """Where the final model ships when the search or the ship step chose its runtime, and its speed there against
    the first FP32 model on ONNX Runtime in the same bench rounds (the median of the per-round ratios, the bar the
    choice was made by)."""
    rt = last.runtime or {}
    k = f"{rt.get('backend')}@1"
    ref = reference(rows, "ort-cpu@1")
    if not rt or ref is None or ref is last or last.latency.get(k, {}).get("status") != "ok":
        return ""
    ratios = round_ratios(ref.latency["ort-cpu@1"], last.latency[k])
    ratio = statistics.median(ratios) if ratios else p50_ms(ref.latency["ort-cpu@1"]) / p50_ms(last.latency[k])
    spread = f", {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} rounds" if ratios else ""
    return (f"Ships on {rt['backend']} ({rt.get('model_precision')} model, {rt.get('inference_precision')} inference; "
            f"chosen by the {CHOSEN_BY.get(rt.get('chosen_by'), 'search')} on {rt.get('machine')}): "
            f"{p50_ms(last.latency[k]):.2f} ms p50, {ratio:.2f}x the "
            f"{ref.label} on ort-cpu (median of paired rounds{spread}).")


def stage_time(results) -> str:
    """The run's wall time, summed over its stages; stages reused from an earlier run count with their first time."""
    ran = sum(r.seconds for r in results.values() if r.status == "done")
    reused = sum(r.seconds for r in results.values() if r.status == "reused")
    return (f"Stage time: {(ran + reused) / 60:.1f} min" + (f" ({ran / 60:.1f} min in this run, {reused / 60:.1f} min "
                                                            "reused from earlier runs)" if reused else "") + ".")


def confusion_tables(rows: list[Row], classes: list[str]) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """(title, (header, body)) of each classifier row's confusion matrix, with per-class recall."""
    out = []
    for r in rows:
        if r.accuracy:
            header = ["true \\ predicted", *classes, "recall"]
            body = [[c, *[str(v) for v in line], f"{r.accuracy.per_class[c].recall * 100:.1f}%"]
                    for c, line in zip(classes, r.accuracy.confusion)]
            out.append((f"{r.step} — {r.label} ({r.split}, n={r.accuracy.n})", (header, body)))
    return out


def _pct(d: dict[str, Any] | None, *keys: str) -> str:
    for k in keys:
        d = (d or {}).get(k)
    return "—" if d is None else f"{d * 100:.1f}%"


def _drop_text(p: dict[str, Any]) -> str:
    return f"{p['drop_pp']:+.2f} ± {p['se_pp']:.2f} pp (worse on {p['worse_on']}, better on {p['better_on']})"


def search_table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Every candidate the search considered, in the order it was paid for, with what it measured on val."""
    from edgeft.optimize.search import pareto_front

    base = result["baseline_val"]
    header = ["candidate (model@runtime)", "MACs kept", "val acc. before recovery", "val acc.", "drop ± 1 SE (paired)",
              "AUROC", "recall / false reject", "p50 on its runtime", "speed-up (rounds)", "Pareto", "minutes",
              "status"]
    front = set(pareto_front(result["candidates"]))
    body = []
    for c in result["candidates"]:
        v = c.get("val")
        sp = c.get("speedups") or []
        failed = [g["gate"] for g in c.get("verdicts", []) if g["status"] == "fail"]
        status = (c["status"] + (f" ({', '.join(failed)})" if failed else "") if v
                  else f"not run: {c.get('reason', '')}")
        status = Mark(status, "", "shipped") if c["key"] == result["chosen"] else status
        body.append([c["key"], fmt(c.get("macs_ratio"), ".3f"), _pct(c, "val_before_recovery"), _pct(v, "accuracy"),
                     _drop_text(paired_drop(base["labels"], base["predictions"], c["val_predictions"]))
                     if v and c.get("val_predictions") and base.get("labels") else "—",
                     fmt(((v or {}).get("decisions") or {}).get("auroc"), ".3f"),
                     f"{_pct(v, 'policy', 'recall')} / {_pct(v, 'policy', 'false_reject')}" if v and v.get("policy")
                     else "—", fmt(c.get("p50_ms"), ".2f") + (" ms" if c.get("p50_ms") else ""),
                     f"{statistics.median(sp):.2f}x ({min(sp):.2f}-{max(sp):.2f})" if sp else "—",
                     "front" if c["key"] in front else "—",
                     f"{c['seconds'] / 60:.1f}" if c.get("seconds") else "—", status])
    return header, body


def search_lines(result: dict[str, Any]) -> list[str]:
    """What the search did and why it shipped what it shipped, in sentences."""
    from edgeft.optimize.search import pareto_front

    if not result.get("candidates"):
        return []
    chosen = next(c for c in result["candidates"] if c["key"] == result["chosen"])
    tried = sum(1 for c in result["candidates"] if c.get("val"))
    out = [f"Search: {tried} of {len(result['candidates'])} candidates paid for in {result['seconds'] / 60:.1f} min "
           f"(budget {result['budget_s'] / 60:.0f} min); every decision on val, with the test split sealed until "
           f"the shipped model was chosen; test was then read once, for the first and the shipped models.",
           f"Shipped {chosen['key']}: " + ("it met every gate on val, and no faster candidate did." if result["passed"]
                                          else "no candidate met every gate on val; this is the best compromise "
                                               "(the fastest whose worst miss, relative to its limit, is within one "
                                               "paired standard error of the smallest).")]
    out += [f"On val, {GateVerdict.from_dict(v).line()}" for v in chosen.get("verdicts", []) if v["status"] == "fail"]
    runtimes = sorted({c.get("runtime", "ort-cpu") for c in result["candidates"] if c.get("val")})
    front = pareto_front(result["candidates"])
    if len(front) > 1 or len(runtimes) > 1:
        out.append(f"Runtimes scored and timed: {', '.join(runtimes)} (each candidate with its own threshold, chosen "
                   "on its runtime's val scores; speed-ups are medians of per-round ratios against the fine-tuned FP32 "
                   f"ONNX model on ort-cpu). Pareto front on val (speed-up against accuracy): {', '.join(front)}.")
    return out


def ship_section(run: Path, steps) -> dict[str, Any] | None:
    """The ship step's candidates (every model on every runtime it tried, as measured on val) and why it shipped what
    it shipped; None without a ship step."""
    from edgeft.optimize.rows import load_choice

    step = next((s for s in steps if s.stage == "ship"), None)
    doc = load_choice(run / step.name) if step is not None else None
    if doc is None:
        return None
    chosen = next(c for c in doc["choices"] if c["key"] == doc["chosen"])
    quality = next((c["quality_name"] for c in doc["choices"] if c.get("quality_name")), "quality")
    header = ["candidate (model@runtime)", "step", f"val {quality}", "val recall / false reject", "p50 on its runtime",
              "speed-up (rounds)", "status"]
    body = []
    for c in doc["choices"]:
        sp = c.get("speedups") or []
        failed = [g["gate"] for g in c.get("verdicts", []) if g["status"] == "fail"]
        status = (c["status"] + (f" ({', '.join(failed)})" if failed else "") if c["status"] != "not run"
                  else f"not run: {c.get('reason', '')}")
        body.append([c["key"], c["step"] + (" (adapted to it)" if c.get("adapted") else ""),
                     fmt(c.get("quality"), ".4f"),
                     f"{_pct(c, 'recall')} / {_pct(c, 'false_reject')}" if c.get("recall") is not None else "—",
                     fmt(c.get("p50_ms"), ".2f") + (" ms" if c.get("p50_ms") else ""),
                     f"{statistics.median(sp):.2f}x ({min(sp):.2f}-{max(sp):.2f})" if sp else "—",
                     Mark(status, "", "shipped") if c["key"] == doc["chosen"] else status])
    adapted = ", adapted to its runtime" if chosen.get("adapted") else ""
    lines = [f"Each of the run's models on each runtime, scored on val with its own threshold chosen on that runtime's "
             f"scores, judged by the gates against {doc['base']} (on ort-cpu), and timed against it in the same "
             f"interleaved rounds (speed-up: median of the per-round ratios), in {doc['seconds']:.0f} s; test was not "
             "read to choose.",
             f"Shipped {chosen['key']} ({chosen['step']}{adapted}): " + (
                 "it met every gate on val, and no faster candidate did (speed-ups within 2% count as one speed; "
                 "then the model's own precision, then fewer val false rejects at its operating point)."
                 if doc["passed"] else
                 "no candidate met every gate on val; this is the smallest worst miss.")]
    lines += [f"On val, {GateVerdict.from_dict(v).line().split('; try')[0]}" for v in chosen.get("verdicts", [])
              if v["status"] == "fail"]
    return {"lines": lines, "table": (header, body)}


def _tables(recipe, run: Path, steps, results, rows: list[Row], gates: list[GateVerdict]) -> dict[str, Any]:
    """The report's tables as (header, body) data, rendered by both templates."""
    from edgeft.optimize.rows import table

    header, body = table(rows)
    gate_rows = [[g.gate, str(g.limit), "—" if g.value is None else str(g.value), g.model or "—",
                  Mark(g.status, {"pass": "pass", "fail": "fail"}.get(g.status, "skip")), g.detail] for g in gates]
    lineage = []
    for s in steps:
        res = results.get(s.name)
        sha = next((r.sha256[:12] for r in rows if r.step == s.name and r.sha256), "")
        origin = "pretrained weights"
        if s.stage == "import" and res is not None and (run / s.name).is_dir():  # the user's file and its SHA-256
            src = art.load(run / s.name).meta.imported or {}
            origin = f"{src.get('model')} (sha256 {str(src.get('source_sha256'))[:12]})"
        lora = (art.load(run / s.name).meta.metrics.get("lora") if s.stage == "finetune" and res is not None
                and (run / s.name).is_dir() else None)
        if lora:  # adapted with LoRA: what trained, and the adapter kept beside the merged model
            origin += (f", adapted with LoRA (rank {lora['rank']}, {lora['trainable_params']:,} adapter parameters "
                       f"on {lora['targets']} layers, adapter {lora['adapter_bytes'] / 1e6:.2f} MB, merged)")
        lineage.append([s.name, s.stage, s.parent or (", ".join(s.inputs) if s.inputs else origin),
                        res.status if res else "not run", f"{res.seconds:.0f}" if res else "", sha,
                        (res.reason[:120] if res else "")])
    classes = art.load(run / rows[0].step).meta.class_names
    return {"stages": (header, body), "profile": profile_section(run, steps), "ship": ship_section(run, steps),
            "gates": (["gate", "limit", "value", "model", "status", "detail"], gate_rows) if gates else None,
            "lineage": (["step", "stage", "reads", "status", "seconds", "model sha256", "note"], lineage),
            "confusion": confusion_tables(rows, classes)}


def profile_section(run: Path, steps) -> dict[str, Any] | None:
    """Where the final model's time goes (the bench step's ``profile.json``): lines and a table of operator groups,
    with the share of the measured p50 they account for and the floor this CPU could reach for the model."""
    from edgeft.bench.profile import OVER_100, REPORT_FILE, statistic

    doc = next((json.loads((run / s.name / REPORT_FILE).read_text()) for s in steps
                if s.stage == "bench" and (run / s.name / REPORT_FILE).is_file()), None)
    if doc is None:
        return None
    if "error" in doc:
        return {"lines": [f"No profile of {doc['step']} on {doc['backend']}: {doc['error']}."], "table": None}
    p = doc["profile"]
    p50, run, cov = p["p50_us"] / 1000, p["run_us"] / 1000, p["coverage"]
    rest = max(1 - cov, 0)
    call = min(p["call_us"] / 1000 / run, rest) if p.get("call_us") is not None and run else None
    lines = [f"{doc['step']} on {doc['backend']} ({p['threads']} threads, {p['calls']} profiled calls): its operators "
             f"account for {cov * 100:.0f}% of a profiled call (the {statistic(doc['backend'])} over the calls"
             + (f"; {OVER_100}" if cov > 1 else "") + ")"
             + (f", what any call costs the runtime (a no-op graph with this input, timed the same way) "
                f"{call * 100:.0f}%: together {(cov + call) * 100:.0f}%; the rest, about {(rest - call) * run:.3f} ms, "
                "is its work between operators" if call is not None else
                f"; the rest, about {rest * run:.3f} ms, is the runtime's own work between operators")
             + f". A profiled call takes {run:.3f} ms, {p50:.3f} ms without profiling.",
             doc["floor_text"][0].upper() + doc["floor_text"][1:] + "."]
    rows = [[g, f"{v['us'] / 1000:.3f}", f"{v['share'] * 100:.1f}%", str(v["ops"])]
            for g, v in sorted(p["groups"].items(), key=lambda kv: -kv[1]["us"])]
    if call is not None:
        rows.append(["a call that does no work (no-op graph, same input)", f"{call * run:.3f}", f"{call * 100:.1f}%",
                     "—"])
        rest -= call
    if rest > 0:
        rows.append(["runtime's own work between operators", f"{rest * run:.3f}", f"{rest * 100:.1f}%", "—"])
    return {"lines": lines, "table": (["group", f"ms a call ({statistic(doc['backend'])})", "share of a profiled call",
                                       "operators"], rows)}


def _bench_note(doc: dict[str, Any] | None) -> str:
    if not doc:
        return ""
    c = doc["config"]
    return (f"Latency: batch {', '.join(map(str, c['batches']))}, {c.get('threads') or 'default'} threads, "
            f"{c.get('rounds', 1)} interleaved rounds of {c.get('duration_s')} s per model and backend; "
            "p50 = median of the rounds' p50s; (Nx) = speed-up over the first model measured on that backend; "
            "memory = peak resident memory of a process that loads and runs only that model, above the same "
            "process's resident memory with the runtime imported (CPU backends).")


def write_report(recipe, run: Path, steps, results, rows: list[Row], doc: dict[str, Any] | None,
                 gates: list[GateVerdict], search: dict[str, Any] | None = None, gallery: Any = None) -> Path:
    """Write ``report.md``, ``report.html`` and the charts (``pareto.svg``, ``roc.svg``, a detector's ``pr.svg``, with a
    search's result ``search.svg``) into the run folder, atomically each; with a task's gallery (an
    ``edgeft.tasks.gallery.Gallery``), its test parts (linked from the Markdown, embedded in the HTML)."""
    import jinja2
    import yaml

    if next((r for r in rows if r.measured), None) is None:
        raise EdgeftError(f"no stage in {run} produced a model to report on")
    charts = {"pareto": pareto_svg(rows), "roc": roc_svg(rows), "pr": pr_svg(rows),
              "search": search_svg(search) if search else ""}
    training = [(r, f"training-{r.step}.svg", training_svg(r.history)) for r in rows if r.history]
    data = {"name": recipe.name, "source": recipe.source, "data": str(recipe.data),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "lines": headline(rows, gates, (doc or {}).get("cpu_runtime")) + [stage_time(results)],
            "bench_note": _bench_note(doc), "quality": quality_name(rows), "charts": charts,
            "search_lines": search_lines(search) if search else [],
            "search_table": search_table(search) if search else None,
            "gallery": gallery,
            "training": [{"label": r.label, "step": r.step, "file": f, "svg": svg} for r, f, svg in training if svg],
            "device": json.dumps((doc or {}).get("device") or {}, indent=1),
            "recipe_yaml": yaml.safe_dump(recipe.to_dict(), sort_keys=False).rstrip(),
            **_tables(recipe, run, steps, results, rows, gates)}
    rendered = {}
    for name in ("report.md", "report.html"):  # HTML escapes every value; Markdown prints it as it is
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                 autoescape=name.endswith(".html"), trim_blocks=True, lstrip_blocks=True)
        env.filters.update(md_cell=_md_cell, html_cell=_html_cell)
        rendered[name] = env.get_template(name + ".j2").render(**data)
    for name, text in (("report.md", rendered["report.md"]), ("report.html", rendered["report.html"]),
                       ("pareto.svg", charts["pareto"]),
                       ("roc.svg", charts["roc"]), ("pr.svg", charts["pr"]), ("search.svg", charts["search"]),
                       *[(f, svg) for _, f, svg in training]):
        if not text:
            continue
        tmp = run / f".{name}.tmp"
        tmp.write_text(text.rstrip("\n") + "\n")
        tmp.replace(run / name)
    return run / "report.html"


def _md_cell(cell: Any) -> str:
    if isinstance(cell, Mark):
        text = (f"**{cell.prefix}** " if cell.prefix else "") + cell.text
        return f"**{text}**" if cell.style == "strong" and not cell.prefix else text
    return str(cell).replace("|", "\\|")


def _html_cell(cell: Any):
    from markupsafe import Markup, escape

    if isinstance(cell, Mark):
        prefix = Markup("<strong>{}</strong> ").format(cell.prefix) if cell.prefix else ""
        if cell.style == "strong" and not cell.prefix:
            return Markup("<strong>{}</strong>").format(cell.text)
        if cell.style in ("pass", "fail", "skip"):
            return prefix + Markup('<span class="{}">{}</span>').format(cell.style, cell.text)
        return prefix + escape(cell.text)
    return escape(str(cell))
