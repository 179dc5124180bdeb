// ckpt_save: one parallel HDF5 file per save, written collectively, then committed by
// rank 0 (fsync, rename, directory fsync, LATEST) and pruned to checkpoint.keep files.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/status.h"
#include "daemon/ckpt.h"

#define PATHLEN 1100 // a directory of up to 512 bytes (config) plus a file name

// ---------------------------------------------------------------------------------------
// file-system steps of the commit (rank 0 only)

// mkdir -p.
static int make_dirs(const char* dir, char* msg) {
    char buf[PATHLEN];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) {
        ckpt_errf(msg, CKPT_ERRLEN, "checkpoint directory \"%s\": empty or too long", dir);
        return MOED_ERR_OTHER;
    }
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot create directory: %s", buf, strerror(errno));
            return MOED_ERR_OTHER;
        }
        buf[i] = c;
    }
    return MOED_OK;
}

// fsync of a file or a directory (a rename is durable only once its directory is synced).
static int sync_path(const char* path, char* msg) {
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: fsync failed: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return MOED_ERR_OTHER;
    }
    close(fd);
    return MOED_OK;
}

static int rename_synced(const char* from, const char* to, const char* dir, char* msg) {
    if (rename(from, to) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot rename to %s: %s", from, to, strerror(errno));
        return MOED_ERR_OTHER;
    }
    return sync_path(dir, msg);
}

// LATEST holds the committed file's name (relative to the directory) and a newline.
static int write_latest(const char* dir, const char* name, char* msg) {
    char tmp[PATHLEN], latest[PATHLEN], line[64];
    snprintf(tmp, sizeof tmp, "%s/LATEST.tmp", dir);
    snprintf(latest, sizeof latest, "%s/LATEST", dir);
    int len = snprintf(line, sizeof line, "%s\n", name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0 || write(fd, line, (size_t)len) != len || fsync(fd) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot write: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        unlink(tmp);
        return MOED_ERR_OTHER;
    }
    if (close(fd) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot write: %s", tmp, strerror(errno));
        return MOED_ERR_OTHER;
    }
    return rename_synced(tmp, latest, dir, msg);
}

static int commit(const char* dir, const char* tmp, const char* final, const char* name,
                  char* msg) {
    int rc = sync_path(tmp, msg);
    if (rc == MOED_OK) rc = rename_synced(tmp, final, dir, msg);
    if (rc == MOED_OK) rc = write_latest(dir, name, msg);
    return rc;
}

// Deletes step_*.h5.tmp left by interrupted saves, then the oldest step files until `keep`
// remain, never the one just committed (`current`). One directory scan per deleted file
// keeps this free of allocations; there are rarely more than one or two to delete.
static int prune(const char* dir, int keep, long current, char* msg) {
    DIR* d = opendir(dir);
    if (!d) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot list: %s", dir, strerror(errno));
        return MOED_ERR_OTHER;
    }
    char path[PATHLEN];
    long others = 0;
    struct dirent* de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n > 4 && !strcmp(de->d_name + n - 4, ".tmp") && !strncmp(de->d_name, "step_", 5)) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path); // best effort: a leftover of a killed save
            continue;
        }
        long s = ckpt_parse_step_name(de->d_name);
        if (s >= 0 && s != current) others++;
    }
    int rc = MOED_OK;
    for (; keep > 0 && others > keep - 1 && rc == MOED_OK; others--) {
        long oldest = -1;
        rewinddir(d);
        while ((de = readdir(d))) {
            long s = ckpt_parse_step_name(de->d_name);
            if (s >= 0 && s != current && (oldest < 0 || s < oldest)) oldest = s;
        }
        if (oldest < 0) break;
        char name[64];
        ckpt_step_name(oldest, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (unlink(path) != 0) {
            ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot delete (checkpoint.keep = %d): %s", path, keep,
                      strerror(errno));
            rc = MOED_ERR_OTHER;
        }
    }
    closedir(d);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the HDF5 file (collective)

static int attr_i64(hid_t file, const char* name, long value) {
    int64_t v = value;
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return ok ? 0 : -1;
}

// Variable-length UTF-8 strings: h5py reads them as str.
static int attr_str(hid_t file, const char* name, const char* value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, t, &value) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return ok ? 0 : -1;
}

// Attribute writes are collective metadata operations: every rank passes the same values.
static int write_attrs(hid_t file, const train_t* tr, const char* config) {
    const model_t* m = &tr->model;
    struct {
        const char* name;
        long v;
    } ints[] = {{"format_version", CKPT_FORMAT_VERSION},
                {"step", tr->step},
                {"n_layers", m->L},
                {"d_model", m->d},
                {"d_ff", m->f},
                {"n_experts", m->E},
                {"top_k", m->k},
                {"ranks_at_save", tr->nranks}};
    int rc = attr_str(file, "format", CKPT_FORMAT);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        rc |= attr_i64(file, ints[i].name, ints[i].v);
    rc |= attr_str(file, "moed_version", MOED_VERSION);
    rc |= attr_str(file, "config", config);
    return rc;
}

// This rank's source of dataset ds: the start of its local data (NULL when missing).
static const void* source(const ckpt_dset_t* ds, const train_t* tr, const history_t* h) {
    const model_t* m = &tr->model;
    const param_t* p;
    switch (ds->src) {
    case CKPT_SRC_BIAS: return m->bias + (long)ds->layer * m->E;
    case CKPT_SRC_LOSS: return h ? h->loss : NULL;
    case CKPT_SRC_AUX: return h ? h->aux : NULL;
    case CKPT_SRC_LOAD: return h ? h->load : NULL;
    }
    if (!(p = ckpt_find_param(m, ds->param))) return NULL;
    const float* base = ds->src == CKPT_SRC_W ? m->w : ds->src == CKPT_SRC_M ? m->m : m->v;
    return base + p->offset;
}

static ckpt_dims_t layout_dims(const train_t* tr, const history_t* h) {
    const model_t* m = &tr->model;
    ckpt_dims_t dm = {m->L, m->d, m->f, m->E, m->residual, h ? h->n : 0, m->S};
    return dm;
}

static hid_t file_type(int type) {
    return type == CKPT_F32 ? H5T_IEEE_F32LE : type == CKPT_F64 ? H5T_IEEE_F64LE : H5T_STD_I64LE;
}

static hid_t mem_type(int type) {
    return type == CKPT_F32   ? H5T_NATIVE_FLOAT
           : type == CKPT_F64 ? H5T_NATIVE_DOUBLE
                              : H5T_NATIVE_INT64;
}

// Selects this rank's part of the file space: its experts' hyperslab of a sharded tensor,
// everything on rank 0 for a replicated one, nothing elsewhere. Returns the element count.
static long select_part(hid_t fspace, const ckpt_dset_t* ds, const model_t* m, int rank) {
    long total = 1;
    for (int k = 0; k < ds->ndim; k++) total *= ds->dims[k];
    if (ds->sharded) {
        hsize_t start[3] = {(hsize_t)m->e0, 0, 0};
        hsize_t count[3] = {(hsize_t)m->El, (hsize_t)ds->dims[1], (hsize_t)ds->dims[2]};
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
        return total / m->E * m->El;
    }
    if (rank == 0) {
        H5Sselect_all(fspace);
        return total;
    }
    H5Sselect_none(fspace);
    return 0;
}

// Creates one dataset (collective) and writes this rank's part (collective transfer).
static int write_dataset(hid_t file, const ckpt_dset_t* ds, const train_t* tr, const history_t* h,
                         hid_t lcpl, hid_t dcpl, hid_t dxpl, char* msg) {
    hsize_t dims[3];
    long total = 1;
    for (int k = 0; k < ds->ndim; k++) total *= ds->dims[k], dims[k] = (hsize_t)ds->dims[k];
    const void* buf = source(ds, tr, h);
    if (!buf && total > 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "internal error: no data for %s", ds->path);
        return MOED_ERR_OTHER;
    }
    hid_t fspace = H5Screate_simple(ds->ndim, dims, NULL);
    hid_t dset = H5Dcreate2(file, ds->path, file_type(ds->type), fspace, lcpl, dcpl, H5P_DEFAULT);
    int ok = dset >= 0;
    if (ok && total > 0) {
        hsize_t n = (hsize_t)select_part(fspace, ds, &tr->model, tr->rank);
        hsize_t mn = n ? n : 1;
        hid_t mspace = H5Screate_simple(1, &mn, NULL);
        if (n == 0) H5Sselect_none(mspace);
        ok = H5Dwrite(dset, mem_type(ds->type), mspace, fspace, dxpl, buf) >= 0;
        H5Sclose(mspace);
    }
    if (!ok) {
        char why[512];
        ckpt_h5_reason(why, sizeof why);
        ckpt_errf(msg, CKPT_ERRLEN, "writing %s failed: %s", ds->path, why);
    }
    if (dset >= 0) H5Dclose(dset);
    H5Sclose(fspace);
    return ok ? MOED_OK : MOED_ERR_OTHER;
}

// Every dataset of the layout. After a local failure a rank still makes the same sequence
// of collective calls (creates are symmetric metadata operations, so they fail everywhere
// or nowhere), and the caller agrees once at the end: every extra agreement is a round of
// synchronisation that an oversubscribed or busy machine pays for dearly.
static int write_datasets(hid_t file, const train_t* tr, const history_t* h, char* msg) {
    ckpt_dims_t dm = layout_dims(tr, h);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_create_intermediate_group(lcpl, 1);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER); // every element is written
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    int rc = MOED_OK, n = ckpt_dataset_count(&dm);
    for (int i = 0; i < n; i++) {
        ckpt_dset_t ds;
        ckpt_dataset(&dm, i, &ds);
        char why[CKPT_ERRLEN];
        int r = write_dataset(file, &ds, tr, h, lcpl, dcpl, dxpl, why);
        if (r && rc == MOED_OK) rc = r, memcpy(msg, why, CKPT_ERRLEN);
    }
    H5Pclose(dxpl), H5Pclose(dcpl), H5Pclose(lcpl);
    return rc;
}

// Checks that need no I/O: the same outcome on every rank.
static int check_state(const char* tmp, const train_t* tr, const history_t* h, char* msg) {
    const model_t* m = &tr->model;
    if (h && (h->L != m->L || h->E != m->E)) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: internal error: history is [%d, %d], model [%d, %d]", tmp,
                  h->L, h->E, m->L, m->E);
        return MOED_ERR_OTHER;
    }
    // A tensor the model has but the layout lacks would silently not be saved.
    ckpt_dims_t dm = layout_dims(tr, h);
    int n = ckpt_dataset_count(&dm), n_weights = 0;
    for (int i = 0; i < n; i++) {
        ckpt_dset_t ds;
        ckpt_dataset(&dm, i, &ds);
        n_weights += ds.src == CKPT_SRC_W && ckpt_find_param(m, ds.param) != NULL;
    }
    if (n_weights != m->n_params) {
        ckpt_errf(msg, CKPT_ERRLEN,
                  "%s: internal error: the model has %d tensors, the checkpoint layout %d", tmp,
                  m->n_params, n_weights);
        return MOED_ERR_OTHER;
    }
    return MOED_OK;
}

static int write_file(const char* tmp, const train_t* tr, const history_t* h, const char* config,
                      char* msg) {
    MPI_Comm comm = tr->comm.comm;
    int rc = check_state(tmp, tr, h, msg); // identical on every rank: no agreement needed
    if (rc) return rc;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    char why[512];
    if (file < 0) {
        ckpt_h5_reason(why, sizeof why);
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot create: %s", tmp, why);
        rc = MOED_ERR_OTHER;
    }
    if ((rc = ckpt_agree(rc, msg, CKPT_ERRLEN, comm))) return rc;
    if (write_attrs(file, tr, config) != 0) {
        ckpt_h5_reason(why, sizeof why);
        ckpt_errf(msg, CKPT_ERRLEN, "writing the root attributes failed: %s", why);
        rc = MOED_ERR_OTHER;
    }
    char dmsg[CKPT_ERRLEN];
    int r = write_datasets(file, tr, h, dmsg);
    if (r && rc == MOED_OK) rc = r, memcpy(msg, dmsg, CKPT_ERRLEN);
    // The flush makes every rank MPI_File_sync its part before the close.
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0 && rc == MOED_OK) {
        ckpt_h5_reason(why, sizeof why);
        ckpt_errf(msg, CKPT_ERRLEN, "flush failed: %s", why);
        rc = MOED_ERR_OTHER;
    }
    if (H5Fclose(file) < 0 && rc == MOED_OK) {
        ckpt_h5_reason(why, sizeof why);
        ckpt_errf(msg, CKPT_ERRLEN, "close failed: %s", why);
        rc = MOED_ERR_OTHER;
    }
    if (rc) { // name the file
        char tail[CKPT_ERRLEN];
        snprintf(tail, sizeof tail, "%s", msg);
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s", tmp, tail);
    }
    return ckpt_agree(rc, msg, CKPT_ERRLEN, comm);
}

// MOED_TEST_CKPT_PAUSE: the data is in the .tmp file, nothing is committed yet.
static void test_pause(void) {
    const char* s = getenv("MOED_TEST_CKPT_PAUSE");
    int secs = s ? atoi(s) : 0;
    while (secs > 0) secs = (int)sleep((unsigned)secs);
}

int ckpt_prepare_dir(const char* dir, char* err, size_t errlen) {
    char msg[CKPT_ERRLEN] = "";
    int rc = make_dirs(dir, msg);
    // access() is only a first answer (root passes it, a full disk too), but it turns the
    // common cases, a read-only mount or a directory of another user, into an error now.
    if (rc == MOED_OK && access(dir, W_OK | X_OK) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot write checkpoints there: %s", dir, strerror(errno));
        rc = MOED_ERR_DATA;
    }
    if (rc == MOED_OK) return MOED_OK;
    ckpt_errf(err, errlen, "%s (checkpoint.dir)", msg);
    return MOED_ERR_DATA;
}

int ckpt_save(const char* dir, int keep, const train_t* tr, const history_t* h,
              const char* config_text, char* path_out, size_t pathlen, char* err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    MPI_Comm comm = tr->comm.comm;
    char msg[CKPT_ERRLEN] = "", name[64], final[PATHLEN], tmp[PATHLEN + 4];
    ckpt_step_name(tr->step, name, sizeof name);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);

    // Rank 0's config text on every rank: attribute writes must be identical everywhere.
    static char config[CFG_INI_MAX];
    int rc = MOED_OK;
    if (tr->rank == 0) {
        snprintf(config, sizeof config, "%s", config_text ? config_text : "");
        if (config_text && strlen(config_text) >= sizeof config) {
            ckpt_errf(msg, sizeof msg, "%s: config text longer than %zu bytes", final,
                      sizeof config - 1);
            rc = MOED_ERR_OTHER;
        }
        if (rc == MOED_OK) rc = make_dirs(dir, msg);
    }
    MPI_Bcast(config, sizeof config, MPI_CHAR, 0, comm);
    rc = ckpt_agree(rc, msg, sizeof msg, comm);

    if (rc == MOED_OK) rc = write_file(tmp, tr, h, config, msg);
    if (rc == MOED_OK) test_pause();
    if (rc == MOED_OK && tr->rank == 0) {
        rc = commit(dir, tmp, final, name, msg);
        if (rc == MOED_OK) rc = prune(dir, keep, tr->step, msg);
    }
    if (rc != MOED_OK && tr->rank == 0) unlink(tmp); // never leave a half-written file
    rc = ckpt_agree(rc, msg, sizeof msg, comm);
    if (path_out && pathlen) snprintf(path_out, pathlen, "%s", final);
    if (rc) ckpt_errf(err, errlen, "%s", msg);
    return rc;
}
