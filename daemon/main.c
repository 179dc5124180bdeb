// moed: the command line. Each command lives in its own file (daemon/commands.h) and returns
// the process exit code; this is the one place that turns it into the exit status.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "config/config.h"
#include "config/status.h"
#include "daemon/cli.h"
#include "daemon/commands.h"

static const char* usage =
    "usage: moed run CONFIG [--set section.key=value]...   train (see README: Configuration)\n"
    "       moed forward --checkpoint CKPT --input X.h5 --output Y.h5 [--set ...]\n"
    "                                                       inference with saved weights\n"
    "       moed inspect CKPT                               summary of a checkpoint\n"
    "       moed config CONFIG [--set section.key=value]... print the resolved configuration\n"
    "       moed config --markdown                          print the table of every key\n"
    "       moed --version | --help\n"
    "exit codes: 0 done, 1 other error, 2 usage/config, 3 data/checkpoint, 4 NaN/Inf\n";

static int cmd_config(int argc, char** argv) {
    if (argc >= 3 && strcmp(argv[2], "--markdown") == 0) {
        cfg_print_markdown(stdout);
        return MOED_OK;
    }
    cfg_t c;
    char err[CLI_ERRLEN] = "";
    int rc = cli_load_config(&c, argc, argv, 2, 1, err);
    if (rc) {
        fprintf(stderr, "moed: error: %s\n", err);
        return rc;
    }
    static char ini[1 << 16];
    cfg_write_ini(&c, ini, sizeof ini);
    fputs(ini, stdout);
    return MOED_OK;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return MOED_ERR_CONFIG;
    }
    const char* cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return MOED_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("moed %s\n", MOED_VERSION);
        return MOED_OK;
    }
    if (!strcmp(cmd, "config")) return cmd_config(argc, argv);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc, argv);
    int (*fn)(int, char**, MPI_Comm) = !strcmp(cmd, "run")       ? cmd_run
                                       : !strcmp(cmd, "forward") ? cmd_forward
                                                                 : NULL;
    if (!fn) {
        fprintf(stderr, "moed: error: unknown command '%s' (moed --help)\n", cmd);
        return MOED_ERR_CONFIG;
    }
    // MULTIPLE: with comm.progress = thread a progress thread completes exchanges while the
    // main thread posts the next ones (daemon/dispatch.h); the level is checked there.
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rc = fn(argc, argv, MPI_COMM_WORLD);
    kern_shutdown();
    MPI_Finalize();
    return rc;
}
