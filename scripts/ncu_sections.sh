# Sourced by scripts/profile_*.sh: the ncu sections that scripts/ncu_summary.sh reads (speed of light, pipes,
# memory, scheduler, warp states, per-instruction stall samples). That is about a third of `--set full`'s replay
# passes, which twice ran past a call's time limit. NCU_SECTIONS="--set full" restores everything.
# shellcheck shell=bash
NCU_SECTIONS=${NCU_SECTIONS:-"--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
--section SchedulerStats --section WarpStateStats --section SourceCounters --section LaunchStats --section Occupancy"}
