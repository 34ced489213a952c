"""The report's Distillation section: the teacher's ceiling beside the student it taught."""

from __future__ import annotations


def markdown(d: dict, evaluation: dict) -> str:
    """`d`: reports/curation.json["distill"] (curate writes it when distill is on)."""
    c, r, n = d["ceiling"], d["review"], d["inputs"]
    student = evaluation["finetuned"]
    lines = [
        "## Distillation",
        "",
        (f"Teacher `{d['teacher']}` labelled {n['labelled']} of {n['read']} inputs ({d['quarantined']} quarantined: "
         f"invalid output or unreadable input); a reviewer accepted {r['accepted']} of {r['sample']} sampled labels "
         f"({r['rate']:.0%}, minimum {r['min_accept']:g}); {d['labels_to_curate']} labels went into curation as "
         f"`{d['origin']}`."),
        "",
        "| model | exact match | valid | n | measured on |",
        "|---|---|---|---|---|",
        (f"| teacher (ceiling) | {c['exact_match']:.3f} | {c['valid']:.3f} | {c['n']} | the labelled set minus its "
         "few-shot examples |"),
        (f"| student (fine-tuned) | {student['exact_match']:.3f} | {student['valid']:.3f} | {student['n']} | "
         "the test split (labelled and distilled records) |"),
        "",
    ]
    return "\n".join(lines) + "\n"
