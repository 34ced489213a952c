"""What serving costs on owned hardware vs the cloud API it replaces (the report's cost table).

Per artifact: measured speed -> requests/s of one model instance -> requests/month one box
serves -> $ per 1M requests on the box vs through the API at the measured token counts, the
monthly bill at ``cost.monthly_requests``, and the break-even volume. All inputs are settings
(conf/cost/); the arithmetic is here, plain, so a reader can check it:

    request_s        = TTFT + (completion_tokens - 1 + end_share) / decode_tok_s   (one stream, greedy)
                       end_share: the share of answers that end on an end-of-generation token, which
                       the model computes too (a one-label answer is TTFT + one decode step)
    box_rps          = streams / request_s          (or the load test's requests/s x streams)
    box_capacity     = box_rps x SECONDS_PER_MONTH x utilisation            requests/month
    box_usd_month    = purchase / (years x 12) + watts/1000 x HOURS_PER_MONTH x usd_per_kwh + ops
    onprem_per_1m    = box_usd_month / box_capacity x 1e6                   (a box kept busy)
    api_per_request  = (prompt_tokens x usd_in + completion_tokens x usd_out) / 1e6
    boxes(V)         = ceil(V / box_capacity);  onprem(V) = boxes(V) x box_usd_month;  api(V) = V x api_per_request
    break_even       = box_usd_month / api_per_request, when one box can serve that many; else never
"""

from __future__ import annotations

import math

HOURS_PER_MONTH = 365.25 * 24 / 12          # 730.5
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600  # 2,629,800


def request_seconds(ttft_ms: float, decode_tok_s: float, completion_tokens: float,
                    end_share: float = 0.0) -> float:
    """One request, one stream: time to the first token, then the rest at the decode rate, plus the
    end-of-generation token for the ``end_share`` of answers that stop on one (not billed, but computed)."""
    if not ttft_ms or ttft_ms <= 0 or not decode_tok_s or decode_tok_s <= 0:
        raise ValueError(f"need a positive TTFT and decode rate, got {ttft_ms} ms, {decode_tok_s} tok/s")
    return ttft_ms / 1000 + max(completion_tokens - 1 + end_share, 0) / decode_tok_s


def box_usd_per_month(hw: dict) -> dict:
    """Amortised purchase + energy (the box runs all month at ``watts``) + operations."""
    amort = hw["purchase_usd"] / (hw["years"] * 12)
    energy = hw["watts"] / 1000 * HOURS_PER_MONTH * hw["usd_per_kwh"]
    ops = hw.get("ops_usd_per_month", 0.0)
    return {"amortisation": amort, "energy": energy, "ops": ops, "total": amort + energy + ops}


def api_usd_per_request(prompt_tokens: float, completion_tokens: float, api: dict) -> float:
    return (prompt_tokens * api["usd_per_1m_input_tokens"] + completion_tokens * api["usd_per_1m_output_tokens"]) / 1e6


def cost_row(stream_rps: float, prompt_tokens: float, completion_tokens: float, hw: dict, api: dict,
             monthly_requests: int) -> dict:
    """Every figure of one artifact's cost line (floats, unrounded)."""
    box_rps = stream_rps * hw["streams"]
    capacity = box_rps * SECONDS_PER_MONTH * hw["utilisation"]
    box = box_usd_per_month(hw)
    per_req = api_usd_per_request(prompt_tokens, completion_tokens, api)
    boxes = max(1, math.ceil(monthly_requests / capacity))
    even = box["total"] / per_req if per_req > 0 else math.inf
    return {
        "box_rps": box_rps,
        "box_requests_per_month": capacity,
        "box_usd_per_month": box["total"],
        "onprem_usd_per_1m": box["total"] / capacity * 1e6,
        "api_usd_per_1m": per_req * 1e6,
        "boxes": boxes,
        "onprem_usd_per_month": boxes * box["total"],
        "api_usd_per_month": monthly_requests * per_req,
        "break_even_requests_per_month": even if even <= capacity else None,
    }
