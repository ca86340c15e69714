# Test reward, hostile: a million nested slices kept in the call's copy of the state. Freeing them once
# compute_reward has returned overflows the C stack, so the reward process dies after the call.
def compute_reward(state, info):
    chain = 0
    for _ in range(1_000_000):
        chain = slice(chain)
    state["kept"] = chain
    return 0.0
