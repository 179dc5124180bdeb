# The device scripts' shared helpers (sourced by device-run.sh, device-gemm.sh, device-ab.sh and
# device-abn.sh from the folder they run in: copy them together, `cp docs/device-*.sh .dev/`).
# The caller sets BUDGET_DEFAULT (seconds) before sourcing; BUDGET in the environment wins.
# Do not set OMP_PROC_BIND: with several ranks it would pin them all to the same cores.
NC=$(nproc)
# a CPU quota (cgroup cpu.max) below the CPUs nproc sees: use the quota's whole CPUs
q=$(awk '$1 != "max" {print int(($1 + $2 - 1) / $2)}' /sys/fs/cgroup/cpu.max 2>/dev/null)
[ -n "$q" ] && [ "$q" -ge 1 ] && [ "$q" -lt $NC ] && NC=$q
# The kernels' ISA: avx512 where the CPU has it, else avx2 (the lent machines change; an
# AVX2-only host still gives the 16-core and P = 2..16 figures).
ISA=avx2; grep -q avx512f /proc/cpuinfo && ISA=avx512
END=$(($(date +%s) + ${BUDGET:-${BUDGET_DEFAULT:-400}}))
log() { echo "$(date +%T) $*" >> $OUT/progress.txt; }
# a step's limit: its own, or what is left of the budget, whichever is smaller (at least 1 s)
lim() { local left=$((END - $(date +%s))); [ $left -lt $1 ] && echo $((left > 1 ? left : 1)) || echo $1; }
# ranks a timed-out mpiexec left behind would spin on the cores the next benchmark times
reap() { pkill -9 -f "bin/moed" 2>/dev/null; pkill -9 -f hydra_pmi_proxy 2>/dev/null; true; }
# The machine as the figures need it named: CPU, caches, ISA extensions, threads, huge pages.
cpu_info() {
  lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket|L1d|L2|L3|NUMA node\(s\)|MHz'
  grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  echo "threads NC=$NC ISA=$ISA nproc=$(nproc)"
  echo "thp: $(cat /sys/kernel/mm/transparent_hugepage/enabled)" # madvise or always: huge pages
  uname -r; uptime
}
