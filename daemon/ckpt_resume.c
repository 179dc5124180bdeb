// Choosing the checkpoint to resume from: the file LATEST names, or when LATEST is missing,
// garbage or names an unusable file, the newest step file that passes ckpt_probe.
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "config/status.h"
#include "daemon/ckpt.h"

#define PATHLEN 1100

// ---------------------------------------------------------------------------------------
// resume: LATEST, or the newest valid step file

// Rank 0's view of the directory, broadcast as one block.
typedef struct {
    int n_files;      // step_*.h5 files
    int latest;       // 0: no LATEST, 1: names a step file, 2: garbage
    char name[64];    // the step file LATEST names
    char content[48]; // what a garbage LATEST holds, printable
} dir_view_t;

static void scan_dir(const char* dir, dir_view_t* v) {
    memset(v, 0, sizeof *v);
    DIR* d = opendir(dir);
    if (!d) return;
    struct dirent* de;
    while ((de = readdir(d))) v->n_files += ckpt_parse_step_name(de->d_name) >= 0;
    closedir(d);
    char path[PATHLEN], buf[256];
    snprintf(path, sizeof path, "%s/LATEST", dir);
    FILE* fp = fopen(path, "r");
    if (!fp) return;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    if (ckpt_parse_step_name(buf) >= 0 && n < sizeof v->name) {
        v->latest = 1;
        memcpy(v->name, buf, n + 1);
        return;
    }
    v->latest = 2;
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < sizeof v->content; i++)
        v->content[j++] = (buf[i] >= 32 && buf[i] < 127) ? buf[i] : '?';
    if (n > j) memcpy(v->content + j, "...", 4);
}

// Rank 0: the newest step file older than `below` (any when below < 0), skipping `skip`.
static long next_older(const char* dir, long below, long skip) {
    DIR* d = opendir(dir);
    if (!d) return -1;
    long best = -1;
    struct dirent* de;
    while ((de = readdir(d))) {
        long s = ckpt_parse_step_name(de->d_name);
        if (s < 0 || s == skip || (below >= 0 && s >= below)) continue;
        if (s > best) best = s;
    }
    closedir(d);
    return best;
}

int ckpt_find_resume(const char* dir, const cfg_t* c, MPI_Comm comm, int* found, char* path,
                     size_t pathlen, char* note, size_t notelen, char* err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    static ckpt_info_t info;
    int rank;
    MPI_Comm_rank(comm, &rank);
    *found = 0;
    if (note && notelen) note[0] = '\0';
    dir_view_t v;
    if (rank == 0) scan_dir(dir, &v);
    MPI_Bcast(&v, sizeof v, MPI_BYTE, 0, comm);

    char cand[PATHLEN], why[CKPT_ERRLEN] = "", first_bad[CKPT_ERRLEN] = "";
    char latest_bad[CKPT_ERRLEN] = "";
    long skip = -1;
    if (v.latest == 1) {
        snprintf(cand, sizeof cand, "%s/%s", dir, v.name);
        if (ckpt_probe(cand, c, comm, &info, latest_bad, sizeof latest_bad) == MOED_OK) {
            *found = 1;
            snprintf(path, pathlen, "%s", cand);
            return MOED_OK;
        }
        skip = ckpt_parse_step_name(v.name);
        ckpt_errf(why, sizeof why, "names an unusable file (%s)", latest_bad);
    } else if (v.latest == 2) {
        ckpt_errf(why, sizeof why, "does not name a step_<8 digits>.h5 file (it holds \"%s\")",
                  v.content);
    } else {
        snprintf(why, sizeof why, "is missing");
    }

    // Newest first, every rank probing the same candidate.
    int skipped = 0;
    for (long below = -1;;) {
        long s = rank == 0 ? next_older(dir, below, skip) : 0;
        MPI_Bcast(&s, 1, MPI_LONG, 0, comm);
        if (s < 0) break;
        char name[64], msg[CKPT_ERRLEN];
        ckpt_step_name(s, name, sizeof name);
        snprintf(cand, sizeof cand, "%s/%s", dir, name);
        if (ckpt_probe(cand, c, comm, &info, msg, sizeof msg) == MOED_OK) {
            *found = 1;
            snprintf(path, pathlen, "%s", cand);
            ckpt_errf(note, notelen, "%s/LATEST %s; resuming from %s instead%s", dir, why, cand,
                      skipped ? " (newer files are invalid)" : "");
            return MOED_OK;
        }
        if (!skipped++) memcpy(first_bad, msg, sizeof first_bad);
        below = s;
    }
    if (v.n_files == 0) { // no checkpoint at all: start fresh (say why when LATEST exists)
        if (v.latest)
            ckpt_errf(note, notelen, "%s/LATEST %s; no step files: starting fresh", dir, why);
        return MOED_OK;
    }
    // The reason of the newest step file probed after LATEST's (LATEST's own when it named
    // the only one).
    ckpt_errf(err, errlen, "%s: no valid checkpoint among %d step file%s (%s)", dir, v.n_files,
              v.n_files > 1 ? "s" : "", skipped ? first_bad : latest_bad);
    return MOED_ERR_DATA;
}
