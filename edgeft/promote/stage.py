"""``edgeft promote``: judge a retrained model against the deployed one, write the promotion report, and on a promote
hand the candidate to the station as the next version of its model directory.

Exit 0: promote; 1: keep the deployed model; 3: inconclusive (too few new parts to tell, with how many more would);
2: bad input. The report (``promotion.md`` and ``promotion.json``) is written in every case but a bad input; the model
directory changes only on a promote, and only after the report is complete.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeft.promote.compare import Promotion, compare
from edgeft.promote.rule import PromoteRule

TEMPLATES = Path(__file__).parent / "templates"


def promote(deployed: str | os.PathLike, candidate: str | os.PathLike, data: str | os.PathLike, rule: PromoteRule,
            report: str | os.PathLike, decision=None, extra: dict[str, Path] | None = None,
            into: str | os.PathLike | None = None, latency: bool = True) -> Promotion:
    """Compare, write ``report/promotion.{md,json}``, and on a promote install the candidate into ``into`` (or the
    rule's ``into``) as the next version, ``current`` pointing at it."""
    from edgeft.promote import versions

    into = into if into is not None else rule.into
    if into is not None:  # a model directory that could not take the candidate is refused before minutes are spent
        versions.check(into, Path(deployed))
    extra = {**{k: Path(v) for k, v in rule.also.items()}, **(extra or {})}
    for name, folder in extra.items():
        if not folder.is_dir():
            from edgeft.errors import DataError

            raise DataError(f"also {name}: {folder} is not a folder (a labelled folder with one subfolder per class)")
    result = compare(deployed, candidate, data, rule, decision=decision, extra=extra, latency=latency)
    report = Path(report)
    report.mkdir(parents=True, exist_ok=True)
    write(result, report, data)
    if result.verdict == "promote" and into is not None:
        result.installed = versions.install(into, Path(deployed), Path(candidate), result.candidate_policy,
                                            {"report": str(report / "promotion.md"), "reason": result.reason})
        write(result, report, data)
    return result


def _pct(v: float) -> str:
    return f"{v * 100:.1f}%"


def _side_row(model: str, o) -> dict[str, str]:
    return {"model": model,
            "recall": f"{_pct(o.recall)} [{_pct(o.recall_interval[0])}, {_pct(o.recall_interval[1])}] "
                      f"({o.escapes} escape)",
            "false_reject": f"{_pct(o.false_reject)} [{_pct(o.false_reject_interval[0])}, "
                            f"{_pct(o.false_reject_interval[1])}] ({o.false_rejects})",
            "auroc": f"{o.auroc:.3f}"}


def render(result: Promotion, data: str | os.PathLike) -> str:
    """promotion.md's text."""
    import jinja2

    bounds = [{"label": b.bound.text(), "value": b.value_text(b.change.value),
               "interval": f"[{b.value_text(b.change.low)}, {b.value_text(b.change.high)}]",
               "status": b.status, "more": f"about {b.more_parts} more {b.of_class} parts" if b.more_parts else
               "at the bound: more parts would hardly settle it" if b.at_bound else ""}
              for b in result.bounds]
    slices = []
    for s in result.slices:
        rows = [_side_row("deployed, as it runs", s.deployed), _side_row("candidate", s.candidate)]
        if s.rethresholded is not None:
            rows.insert(1, _side_row("deployed, re-thresholded on today's val (reference)", s.rethresholded))
        f = s.flips
        slices.append({**asdict(s), "rows": rows, "flip_lists": [
            ("Escapes now caught", f.escape_now_caught), ("Caught parts that now escape", f.caught_now_escape),
            ("False rejects now passed", f.false_reject_now_passed),
            ("Passed good parts now rejected", f.passed_now_false_reject)]})
    lat = None
    if result.latency:
        lat = dict(result.latency)
        lat["ratio_text"] = f"{lat['ratio']:.3f}" if lat.get("ratio") is not None else "-"
        lat["interval_text"] = (f"[{lat['interval'][0]:.3f}, {lat['interval'][1]:.3f}]" if lat.get("interval")
                                else "-")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("promotion.md.j2").render(
        verdict=result.verdict, exit_code=result.exit_code, reason=result.reason, deployed=result.deployed,
        candidate=result.candidate, data=str(data), decision_rule=result.decision_rule, thresholds=result.thresholds,
        rule=result.rule, installed=result.installed, bounds=bounds, latency=lat, slices=slices, notes=result.notes)


def write(result: Promotion, report: Path, data: str | os.PathLike) -> None:
    from edgeft import artifact as art

    text = render(result, data)
    tmp = report / ".promotion.md.tmp"
    tmp.write_text(text.rstrip("\n") + "\n")
    tmp.replace(report / "promotion.md")
    art.write_json(report / "promotion.json", result.to_dict())


def summary(result: Promotion) -> list[str]:
    """The lines ``edgeft promote`` prints."""
    lines = [f"promotion: {result.verdict.upper()} (exit {result.exit_code}): {result.reason}"]
    for s in result.slices:
        for name, o in (("deployed", s.deployed), ("candidate", s.candidate)):
            lines.append(f"  {s.name:<10} {name:<9} recall {_pct(o.recall)} false reject {_pct(o.false_reject)} "
                         f"AUROC {o.auroc:.3f}  ({s.n_defective} defective, {s.n_good} good)")
    lines += [f"  {b.text()}" for b in result.bounds]
    if result.latency:
        lines.append(f"  latency: {result.latency['verdict']}: {result.latency['reason']}")
    if result.installed:
        i = result.installed
        lines.append(f"installed {i['dir']}/{i['version']} as {i['current']} (rollback: edgeft rollback {i['dir']})")
    return lines


def rule_from_file(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> PromoteRule:
    """The ``promote:`` section of a YAML file (a recipe, or a file holding only that section); defaults without one."""
    from edgeft.errors import ConfigError
    from edgeft.promote.rule import parse

    d: Any = {}
    if path is not None:
        import yaml

        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--rule {p} is not valid YAML: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"--rule {p} must be a mapping with a promote: section")
        if "promote" in doc:
            d = doc["promote"]
        elif "data" in doc:
            raise ConfigError(f"--rule {p} is a recipe without a promote: section; add one")
        else:
            d = doc  # the section alone
    d = dict(d or {})
    d.update(overrides or {})
    return parse(d, "promote")
