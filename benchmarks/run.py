"""Benchmark grid: algorithms x tasks x seeds in parallel processes, aggregated with rliable.

    MUJOCO_GL=disable python benchmarks/run.py --algos brc_sac sac tqc crossq --tasks Pendulum-v1 \
        --seeds 0 1 2 --workers 2 --out runs/bench

The same as ``sb3-brc bench``; the logic and the flags are in :mod:`sb3_brc.bench` (``--help`` lists them).
"""

from sb3_brc.bench import main

if __name__ == "__main__":
    main()
