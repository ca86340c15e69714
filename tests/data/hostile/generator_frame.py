# attack: a generator's frame leads to the caller's frame and its globals (os, the guards, the trainer)
# expect: refused
# guard: "gi_frame" is a restricted name
def compute_reward(state, info):
    generator = (x for x in [1])
    caller = generator.gi_frame.f_back
    caller.f_globals["os"].makedirs(info["marker"])
    return 0.0
