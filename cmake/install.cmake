# `cmake --install BUILD --prefix P`: a self-contained tree that works outside the source
# checkout (tests/e2e/install_tree.sh runs it from an unrelated directory).
#   P/bin/moed, P/bin/moed-bench
#   P/share/moed/config/*.ini      example configs (tiny.ini is the README's)
#   P/share/moed/slurm/            moed.sbatch, moed-sweep.sh, README.md
#   P/share/moed/analysis/         plot_run.py (Debian's /usr/bin/python3, h5py + matplotlib)
#   P/share/doc/moed/README.md, performance.md (the measurement record)
include(GNUInstallDirs)
install(TARGETS moed RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(MOED_BUILD_BENCH)
  install(TARGETS moed-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
set(moed_share ${CMAKE_INSTALL_DATADIR}/moed)
install(DIRECTORY config/ DESTINATION ${moed_share}/config FILES_MATCHING PATTERN "*.ini")
install(PROGRAMS deploy/slurm/moed.sbatch deploy/slurm/moed-sweep.sh DESTINATION ${moed_share}/slurm)
install(FILES deploy/slurm/README.md DESTINATION ${moed_share}/slurm)
install(PROGRAMS deploy/analysis/plot_run.py DESTINATION ${moed_share}/analysis)
install(FILES deploy/analysis/README.md DESTINATION ${moed_share}/analysis)
install(FILES README.md docs/performance.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
