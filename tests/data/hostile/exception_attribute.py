# attack: reading attributes of a caught exception (with_traceback, args)
# expect: refused
# guard: reads .with_traceback of a ZeroDivisionError
def compute_reward(state, info):
    try:
        return 1 / 0
    except ZeroDivisionError as error:
        return float(len(str(error.with_traceback(None))))
