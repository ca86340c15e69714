"""Signs that a policy games its reward file instead of solving the task. Per task, over its recent visits (the
trajectories of one iteration), does the file's return rank successful trajectories first, and does the return
rise while success falls? tgrpo.py logs these checks and prints a warning line when a sign appears; rescore.py and
gen_reward.py --recordings rank recorded trajectories with `ranking`."""

from collections import deque

import numpy as np

WINDOW = 8  # a task's recent visits a check looks at


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, ties sharing their mean rank (for a rank correlation)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, tie_group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(tie_group, weights=ranks) / counts)[tie_group]


def reward_check(visits: list) -> dict:
    """What a task's recent visits, [(returns, success)] oldest first, say about its reward file.

    top_return_success: the success rate of the quarter of trajectories with the highest returns. Where both
    outcomes occur: return_success_corr, the rank correlation of return and success, and failed_ahead, the failed
    trajectories' mean return minus the successful ones'. return_trend, success_trend: newer half minus older half.
    """
    returns, success = (np.concatenate(part) for part in zip(*visits))
    check = {"top_return_success": success[returns >= np.quantile(returns, 0.75)].mean()}
    if 0 < success.sum() < len(success):
        check["return_success_corr"] = np.corrcoef(average_ranks(returns), success)[0, 1]
        check["failed_ahead"] = returns[~success].mean() - returns[success].mean()
    if len(visits) >= 2:
        older, newer = visits[: len(visits) // 2], visits[len(visits) // 2 :]
        for key, k in (("return_trend", 0), ("success_trend", 1)):
            check[key] = np.concatenate([v[k] for v in newer]).mean() - np.concatenate([v[k] for v in older]).mean()
    return check


def ranking(returns: np.ndarray, success: np.ndarray) -> dict:
    """How returns rank trajectories of known outcome: how many (and how many succeeded), the mean return of the
    successful and of the failed ones, their rank correlation (nan unless both outcomes occur), and the success
    rate of the quarter with the highest returns (nan without any trajectory)."""
    nan = float("nan")
    check = reward_check([(returns, success)]) if len(returns) else {"top_return_success": nan}
    return {
        "trajectories": len(success),
        "succeeded": int(success.sum()),
        "return_succeeded": returns[success].mean() if success.any() else nan,
        "return_failed": returns[~success].mean() if (~success).any() else nan,
        "return_success_corr": check.get("return_success_corr", nan),
        "top_return_success": check["top_return_success"],
    }


def hacking_signs(check: dict, window_full: bool) -> dict:
    """{kind: text} of the signs in a reward_check. The trend needs a full window, and success falling by 0.2 or
    more, so that one lucky success early on does not raise it."""
    signs = {}
    if check.get("failed_ahead", 0.0) > 0:
        signs["failed_ahead"] = f"failed trajectories out-score successful ones by {check['failed_ahead']:.3g} return"
    if window_full and check.get("return_trend", 0.0) > 0 and check.get("success_trend", 0.0) <= -0.2:
        signs["diverging"] = (
            f"the return rises ({check['return_trend']:+.3g}) while success falls ({check['success_trend']:+.2f})"
        )
    return signs


def track_reward_files(history: dict, tasks: np.ndarray, returns: np.ndarray, success: np.ndarray) -> tuple:
    """Add one iteration's trajectories (their task, return and success) to each task's window in `history`.
    Returns the scalars to log, {"<task>/<check>": value}, and the signs that appeared since the task's last visit,
    [(task, text)] (a sign that persists is reported once, again only after it went away)."""
    scalars, new_signs = {}, []
    for task in dict.fromkeys(tasks.tolist()):
        state = history.setdefault(task, {"visits": deque(maxlen=WINDOW), "signs": set()})
        state["visits"].append((returns[tasks == task], success[tasks == task].astype(bool)))
        check = reward_check(list(state["visits"]))
        for key in ("return_success_corr", "top_return_success"):
            if key in check:
                scalars[f"{task}/{key}"] = check[key]
        signs = hacking_signs(check, window_full=len(state["visits"]) == WINDOW)
        for kind in signs.keys() - state["signs"]:
            new_signs.append((task, f"over its last {len(state['visits'])} visits, {signs[kind]}"))
        state["signs"] = set(signs)
    return scalars, new_signs
