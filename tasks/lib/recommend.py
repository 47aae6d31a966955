"""The recommendation: which option to ship (base / fine-tune / embed / both), the evidence, the
cost of each option, how sure, and what would change the answer. Pure functions; evaluate calls
`recommend` with the per-question answer scores it already holds.

Headline metric: accuracy when every eval question is a short-answer one (qa.jsonl `choices`:
every answer row of every setup has an accuracy), else token_f1 (`headline_metric`). On a mixed
set accuracy covers only part of the questions, so it is shown but never decides.

Decision rule. Order the options by what they cost to build: measured train + index seconds, then
adapter + index bytes, then base < embed < fine-tune < both where the measurements tie (a run
without cost reports keeps that order). An option is *beaten* when another option's paired
interval of the difference on the headline metric lies above 0. Ship the cheapest option that no
other option beats. That is the option with the best headline mean exactly when its paired
interval against every cheaper option excludes 0 in its favour (the best mean cannot be beaten);
otherwise it is the cheapest of the options the data cannot tell apart from the top.
"""

from __future__ import annotations

import math
from typing import Any

# The paired-difference interval, behind this one import: paired_interval(a, b, resamples, seed)
# -> {"mean", "lo", "hi"} of mean(a - b). Swap it here for the BCa bootstrap when it lands.
from tasks.lib.metrics import paired_diff_ci as paired_interval

OPTIONS = {"base": "base", "rag": "embed", "finetuned": "fine-tune", "hybrid": "both"}
DEFAULT_ORDER = tuple(OPTIONS)  # cheapest first when measured costs tie
ASSUMPTION = ("assuming the observed mean difference holds and the interval narrows as 1/√n")
# Past this many times today's eval set, the mean difference is under a fifth of the interval's
# half-width: a projected size is noise on noise, so the two are called tied, not "~N away".
SETTLE_FACTOR = 25

# ---- inputs -----------------------------------------------------------------------------------


def headline_metric(per_setup: dict[str, list[dict[str, Any]]]) -> str:
    """"accuracy" when every answer row has one (the whole eval set has choices), else "token_f1"."""
    rows = [r for answers in per_setup.values() for r in answers]
    return "accuracy" if rows and all(r.get("accuracy") is not None for r in rows) else "token_f1"


def paired_values(per_setup: dict[str, list[dict[str, Any]]], metric: str) -> dict[str, list[float]]:
    """Per-setup values of `metric` on the questions every setup answered, in one qid order."""
    scored = {s: {r["qid"]: r.get(metric) for r in rows} for s, rows in per_setup.items()}
    scored = {s: v for s, v in scored.items() if v and None not in v.values()}
    if not scored:
        return {}
    first = next(iter(scored.values()))
    qids = [q for q in first if all(q in v for v in scored.values())]
    return {s: [float(v[q]) for q in qids] for s, v in scored.items()}


def option_costs_table(costs: dict[str, dict[str, float]], speed: dict[str, dict[str, float]],
                       context_p95_ms: float | None = None) -> dict[str, dict[str, Any]]:
    """Build seconds, bytes on disk and answer latency per setup (p95 when speed measured it)."""
    out = {}
    for setup, cost in costs.items():
        fast = speed.get(setup, {})
        uses_context = setup in ("rag", "hybrid")
        out[setup] = {
            "train_seconds": cost.get("train_seconds", 0.0),
            "build_seconds": cost.get("train_seconds", 0.0) + cost.get("index_seconds", 0.0),
            "adapter_bytes": cost.get("adapter_bytes", 0),
            "bytes": cost.get("adapter_bytes", 0) + cost.get("index_bytes", 0),
            "latency_ms": fast.get("latency_ms"), "p95_ms": fast.get("p95_ms"),
            # the answer setups' context comes from one vector search per question
            "retrieval_p95_ms": context_p95_ms if uses_context else None}
    return out


def cost_order(setups: list[str], table: dict[str, dict[str, Any]]) -> list[str]:
    """Setups cheapest first: build seconds, then bytes, then the default order."""
    def key(s: str) -> tuple[float, float, int]:
        row = table.get(s, {})
        return row.get("build_seconds", 0.0), row.get("bytes", 0), DEFAULT_ORDER.index(s)

    return sorted(setups, key=key)


# ---- statistics -------------------------------------------------------------------------------


def pairwise(values: dict[str, list[float]], resamples: int, seed: int
             ) -> dict[str, dict[str, dict[str, float]]]:
    """Paired interval of mean(a - b) for every ordered pair; b - a is the mirror of a - b."""
    setups = list(values)
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in setups}
    for i, a in enumerate(setups):
        for b in setups[i + 1:]:
            d = paired_interval(values[a], values[b], resamples, seed)
            out[a][b] = {"mean": d["mean"], "lo": d["lo"], "hi": d["hi"]}
            out[b][a] = {"mean": -d["mean"], "lo": -d["hi"], "hi": -d["lo"]}
    return out


def eval_questions_needed(n: int, diff: dict[str, float]) -> int | None:
    """Eval-set size at which the interval of `diff` would exclude 0: n * (half-width / |mean|)²,
    assuming the observed mean holds and the interval narrows as 1/√n. None for a zero mean."""
    if diff["mean"] == 0 or any(math.isnan(diff[k]) for k in ("mean", "lo", "hi")):
        return None
    half = (diff["hi"] - diff["lo"]) / 2
    return max(n, math.ceil(n * (half / abs(diff["mean"])) ** 2))


# ---- the decision -----------------------------------------------------------------------------


def beaten_by(diffs: dict[str, dict[str, dict[str, float]]]) -> dict[str, list[str]]:
    """For each setup, the setups whose paired interval against it lies above 0."""
    return {s: [o for o in diffs if o != s and diffs[o][s]["lo"] > 0] for s in diffs}


def choose(order: list[str], beaten: dict[str, list[str]]) -> str:
    """The cheapest setup nobody beats (there always is one: the best mean is never beaten)."""
    return next((s for s in order if not beaten[s]), order[0])


def confidence_of(rec: str, best: str, order: list[str], beaten: dict[str, list[str]]) -> str:
    """separated: the best mean, beating every cheaper option (base: every option);
    leaning: beats some cheaper option, a costlier one may be better; tied: beats none."""
    cheaper = order[:order.index(rec)]
    wins = [c for c in cheaper if rec in beaten[c]]
    if len(order) == 1:  # nothing to compare with
        return "tied"
    if rec == best and (wins == cheaper if cheaper else
                        all(rec in beaten[o] for o in order if o != rec)):
        return "separated"
    return "leaning" if wins else "tied"


def evidence_vs(rec: str, best: str, order: list[str], diffs: dict[str, Any],
                beaten: dict[str, list[str]]) -> str | None:
    """The comparison that decides: the better mean it cannot exclude, else its weakest win."""
    if rec != best:
        return best
    cheaper = order[:order.index(rec)]
    unsettled = [c for c in cheaper if rec not in beaten[c]]
    if unsettled:
        return unsettled[0]
    pool = cheaper or [o for o in order if o != rec]
    return min(pool, key=lambda o: diffs[rec][o]["lo"]) if pool else None


def recommend(values: dict[str, list[float]], summary: dict[str, dict[str, Any]],
              table: dict[str, dict[str, Any]], metric: str = "token_f1", resamples: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """The option to ship, with evidence, costs, confidence and what would change it."""
    if not values:
        return {"metric": metric, "option": None, "setup": None, "confidence": "none",
                "summary": f"No setup has {metric} on every question: nothing to recommend."}
    n = len(next(iter(values.values())))
    diffs = pairwise(values, resamples, seed)
    beaten = beaten_by(diffs)
    order = cost_order(list(values), table)
    best = max(order, key=lambda s: (sum(values[s]) / n, -order.index(s)))
    rec = choose(order, beaten)
    vs = evidence_vs(rec, best, order, diffs, beaten)
    rec_out = {
        "metric": metric, "option": OPTIONS[rec], "setup": rec, "best_mean": best,
        "score": summary.get(rec, {}).get(metric), "n": n,
        "means": {s: sum(values[s]) / n for s in order},
        "confidence": confidence_of(rec, best, order, beaten),
        "evidence": {"setup": rec, "vs": vs, "n": n, **diffs[rec][vs]} if vs else None,
        "cost_order": order, "costs": {s: table.get(s, {}) for s in order},
        "tied": [s for s in order if not beaten[s]], "beaten_by": beaten, "pairwise": diffs}
    rec_out["cheapest_tied"] = rec_out["tied"][0]
    rec_out["what_would_change"] = what_would_change(rec_out)
    rec_out["why"] = why(rec_out, summary)
    rec_out["summary"] = summary_line(rec_out)
    return rec_out


def recommend_reports(answers: dict[str, Any], retrieval: dict[str, Any], resamples: int, seed: int,
                      metric: str | None = None) -> dict[str, Any]:
    """The recommendation from evaluate's answer and retrieval reports (answers.json's content),
    on `metric` (default: the headline metric, see headline_metric)."""
    metric = metric or headline_metric(answers.get("answers", {}))
    methods = retrieval.get("methods", {})
    # rag/hybrid get their context from the chosen method (LoRA vectors, base when no candidate
    # was indexed, in reports from before the choice)
    chosen = (retrieval.get("chosen") or {}).get("method")
    context = methods.get(chosen) or methods.get("lora") or methods.get("base") or {}
    table = option_costs_table(answers.get("costs", {}), answers.get("speed", {}),
                               context.get("latency", {}).get("p95_ms"))
    return recommend(paired_values(answers.get("answers", {}), metric), answers["summary"], table,
                     metric, resamples, seed)


# ---- the words ----------------------------------------------------------------------------------


def name(setup: str) -> str:
    """"embed (rag)"; plain "base" where the option and the setup share the word."""
    return setup if OPTIONS[setup] == setup else f"{OPTIONS[setup]} ({setup})"


def fmt_diff(d: dict[str, float]) -> str:
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def what_would_change(rec: dict[str, Any]) -> dict[str, Any]:
    """The eval-set size that would settle the open comparison, or why none is open."""
    setup, best, n, diffs = rec["setup"], rec["best_mean"], rec["n"], rec["pairwise"]
    if rec["evidence"] is None:
        return {"n_needed": None, "target": None,
                "text": f"Only {setup} was scored: score another setup to compare."}
    if rec["confidence"] == "separated":
        ev = rec["evidence"]
        return {"n_needed": None, "target": None, "text": (
            f"Already separated ({setup} − {ev['vs']}: {fmt_diff(ev)}); more questions only narrow "
            "the intervals. Retraining or new data that closes that gap would change it.")}
    order, beaten = rec["cost_order"], rec["beaten_by"]
    target = best if setup != best else setup
    against = ([c for c in order[:order.index(best)] if best not in beaten[c]] if setup != best
               else [rec["evidence"]["vs"]])
    needs = {c: eval_questions_needed(n, diffs[target][c]) for c in against}
    if None in needs.values():
        c = next(c for c, v in needs.items() if v is None)
        return {"n_needed": None, "target": target, "vs": c, "text": (
            f"{target} and {c} have the same mean {rec['metric']}: no eval-set size separates them.")}
    vs = max(needs, key=lambda c: needs[c])
    if needs[vs] > SETTLE_FACTOR * n:
        return {"n_needed": None, "target": target, "vs": vs, "text": (
            f"{target} − {vs} ({fmt_diff(diffs[target][vs])}) is small next to its interval: "
            f"separating them would take over {SETTLE_FACTOR}× the {n} eval questions, so treat "
            "them as tied; the cheaper option ships.")}
    then = (f"the answer would move to {name(target)}" if target != setup
            else f"{name(setup)} would stay the answer, with separated intervals")
    return {"n_needed": needs[vs], "target": target, "vs": vs, "assumption": ASSUMPTION, "text": (
        f"With about {needs[vs]} eval questions (now {n}), {target} − {vs} "
        f"({fmt_diff(diffs[target][vs])}) would exclude 0, {ASSUMPTION}; {then}. "
        "Raise evaluate.answer_questions (0: every eval question) or add eval data.")}


def why(rec: dict[str, Any], summary: dict[str, dict[str, Any]]) -> list[str]:
    """The reasons, in sentences: the best mean, the deciding comparison, what is ruled out, cost."""
    setup, best, metric, n = rec["setup"], rec["best_mean"], rec["metric"], rec["n"]
    ev, order, beaten = rec["evidence"], rec["cost_order"], rec["beaten_by"]
    ci = summary.get(best, {}).get(metric)
    best_ci = f" [{ci['lo']:.3f}, {ci['hi']:.3f}]" if ci else ""
    out = [f"On {n} eval questions, {name(best)} has the best mean {metric}: "
           f"{rec['means'][best]:.3f}{best_ci}."]
    wins = [c for c in order[:order.index(setup)] if setup in beaten[c]]
    if rec["confidence"] == "separated":
        out.append(f"{name(setup)} beats every {'cheaper' if wins else 'other'} option with a paired "
                   f"interval above 0 (closest: against {ev['vs']}, {fmt_diff(ev)}).")
    elif rec["confidence"] == "leaning":
        out.append(f"{name(setup)} beats {', '.join(name(c) for c in wins)} with a paired interval "
                   f"above 0, but its difference to {ev['vs']} ({fmt_diff(ev)}) covers 0.")
    elif ev:
        out.append(f"No option separates from {name(setup)}: {setup} − {ev['vs']} {fmt_diff(ev)} "
                   f"covers 0, so ship the cheapest of the tied options ({', '.join(rec['tied'])}).")
    ruled = [f"{s} (by {', '.join(beaten[s])})" for s in order if beaten[s]]
    if ruled:
        out.append("Ruled out with separated intervals: " + "; ".join(ruled) + ".")
    out.append(cost_sentence(rec))
    return out


def cost_sentence(rec: dict[str, Any]) -> str:
    """What the recommended option costs, and what the best-mean option would add."""
    setup, best, costs = rec["setup"], rec["best_mean"], rec["costs"]
    mine = costs.get(setup, {})
    text = (f"{name(setup)} costs {mine.get('build_seconds', 0):.0f} s to build and "
            f"{mine.get('bytes', 0) / 1e6:.1f} MB on disk")
    if mine.get("latency_ms") is not None:
        text += f", {mine['latency_ms']:.0f} ms per answer"
    if best != setup and best in costs:
        more = costs[best]
        text += (f"; {best} would add {more.get('build_seconds', 0) - mine.get('build_seconds', 0):+.0f}"
                 f" s and {(more.get('bytes', 0) - mine.get('bytes', 0)) / 1e6:+.1f} MB")
    return text + "."


def summary_line(rec: dict[str, Any]) -> str:
    """One line for the log and the top of scoreboard.md."""
    setup, metric, ev = rec["setup"], rec["metric"], rec["evidence"]
    line = f"Ship {name(setup)} [{rec['confidence']}]: {metric} {rec['means'][setup]:.3f}"
    if ev:
        line += f"; {setup} − {ev['vs']} {fmt_diff(ev)} on {rec['n']} questions"
    change = rec["what_would_change"]
    if change.get("n_needed") and change.get("target") != setup:
        line += f"; ~{change['n_needed']} questions would show whether {change['target']} is worth it"
    return line + "."
