"""The fewest frames a measurement needs: declared as the CLI's option ranges (read when the CLI loads, so this
module imports nothing) and checked against inputs too short, with one number for both."""

EVAL_VIDEO_MIN_FRAMES = 2  # flicker and agreement compare each frame with the one before
BENCH_MIN_FRAMES = 3  # the first frame and two after it: a steady rate
