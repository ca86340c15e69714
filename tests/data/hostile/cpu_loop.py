# attack: an endless pure-Python loop
# expect: cpu
def compute_reward(state, info):
    while True:
        pass
