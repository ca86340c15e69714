# attack: an endless loop that catches whatever stops it and loops again
# expect: cpu
def compute_reward(state, info):
    while True:
        try:
            while True:
                pass
        except Exception:
            pass
