// Shared by the config/ unit suites (test_config.c: reading files and --set;
// test_config_checks.c: defaults, validation, writers, example configs): temporary INI
// files, and the checks on error messages (one line, naming the file and the key).
#ifndef MOED_TESTS_CONFIG_TEST_H
#define MOED_TESTS_CONFIG_TEST_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "config/status.h"

static char err[CFG_ERRLEN];
static char tmp_path[64];

// Writes `text` to a fresh temporary file; returns its path (valid until the next call).
static inline const char* write_tmp(const char* text) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/moed_test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    FILE* f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return tmp_path;
}

// Loads `text` as a file on top of the defaults; returns the rc, leaves the message in err.
static inline int load_text(cfg_t* c, const char* text) {
    cfg_defaults(c);
    err[0] = '\0';
    const char* path = write_tmp(text);
    int rc = cfg_load_file(c, path, err, sizeof err);
    unlink(path);
    return rc;
}

static inline void assert_has(const char* msg, const char* part) {
    ck_assert_msg(strstr(msg, part) != NULL, "message \"%s\" lacks \"%s\"", msg, part);
}

static inline void assert_one_line(const char* msg) {
    ck_assert_msg(msg[0] != '\0', "empty error message");
    ck_assert_msg(strchr(msg, '\n') == NULL, "message \"%s\" has a newline", msg);
}

// A file error: rc 2, one line, names the file and `part` (the key or the problem).
static inline void expect_file_error(const char* text, const char* part) {
    cfg_t c;
    int rc = load_text(&c, text);
    ck_assert_msg(rc == MOED_ERR_CONFIG, "rc %d for:\n%s", rc, text);
    assert_one_line(err);
    assert_has(err, tmp_path);
    assert_has(err, part);
}

// A --set error on top of the defaults: rc 2, names the assignment and `part`.
static inline void expect_set_error(const char* assignment, const char* part) {
    cfg_t c;
    cfg_defaults(&c);
    err[0] = '\0';
    int rc = cfg_set(&c, assignment, err, sizeof err);
    ck_assert_msg(rc == MOED_ERR_CONFIG, "rc %d for --set %s", rc, assignment);
    assert_one_line(err);
    assert_has(err, "--set ");
    assert_has(err, part);
}

static inline void set_ok(cfg_t* c, const char* assignment) {
    int rc = cfg_set(c, assignment, err, sizeof err);
    ck_assert_msg(rc == 0, "--set %s: %s", assignment, err);
}

// cfg_validate must fail with a message containing `part`.
static inline void expect_invalid(const cfg_t* c, int nranks, const char* part) {
    err[0] = '\0';
    int rc = cfg_validate(c, nranks, err, sizeof err);
    ck_assert_msg(rc == MOED_ERR_CONFIG, "validate passed, expected \"%s\"", part);
    assert_one_line(err);
    assert_has(err, part);
}

static inline void expect_valid(const cfg_t* c, int nranks) {
    int rc = cfg_validate(c, nranks, err, sizeof err);
    ck_assert_msg(rc == 0, "validate at %d ranks: %s", nranks, err);
}

// Runs the suite: the program's exit status.
static inline int run_suite(Suite* s) {
    SRunner* sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
