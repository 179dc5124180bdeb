// The configuration's key table (keys.c) and what is done with one key's value through it:
// range checks, loads and stores in cfg_t, formatting. Internal to config/: config.c reads INI
// files and --set through it; the rest of moed sees config.h.
#ifndef MOED_CONFIG_KEYS_H
#define MOED_CONFIG_KEYS_H

#include <ini.h>
#include <stddef.h>

#include "config/config.h"

// libinih reads a line into a buffer of INI_MAX_LINE bytes; our reader rejects longer lines
// instead of letting inih split them into two.
#define CFG_LINE_MAX (INI_MAX_LINE - 1)
// Longest string value: must fit on one INI line as "name = value" so that cfg_write_ini
// output always parses back (checkpoints store it and `moed forward` re-reads it).
#define CFG_STR_MAX 160
_Static_assert(CFG_STR_MAX + 32 <= CFG_LINE_MAX, "string values must fit on one INI line");

typedef enum { K_INT, K_LONG, K_DOUBLE, K_BOOL, K_ENUM, K_STR } key_type;

// Range flags: an open bound excludes the bound itself, e.g. beta1 in [0, 1).
enum { LO_OPEN = 1, HI_OPEN = 2 };

typedef struct {
    const char* name;
    int value;
} enum_name;

typedef struct {
    const char* section;
    const char* name;
    key_type type;
    size_t off, size;       // where the field is in cfg_t and how big it is
    const char* def;        // default, parsed by the same code as a file value
    double lo, hi;          // numbers: value range; strings: length range
    int flags;              // LO_OPEN | HI_OPEN
    const enum_name* enums; // K_ENUM: allowed names, ended by {NULL, 0}
    const char* doc;
} cfg_key;

// A parsed value before it is range-checked and stored: int, long, bool and enum share `i`.
typedef struct {
    long i;
    double d;
    const char* s;
} cfg_value;

extern const cfg_key cfg_keys[]; // every key, grouped by section, in the INI writer's order
extern const size_t cfg_nkeys;

void cfg_set_err(char* err, size_t errlen, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cfg_section_known(const char* section);
// Applies `section.name = text` to *c. `where` ("file:line" or "--set a=b") starts the
// error message.
int cfg_assign(cfg_t* c, const char* where, const char* section, const char* name, const char* text,
               char* err, size_t errlen);
// 0 when v is inside k's range, else -1 with the reason in why.
int cfg_check_value(const cfg_key* k, cfg_value v, char* why, size_t n);
int cfg_enum_known(const cfg_key* k, long v);
cfg_value cfg_value_load(const cfg_t* c, const cfg_key* k);
void cfg_fmt_value(const cfg_key* k, cfg_value v, char* buf, size_t n);
void cfg_fmt_range(const cfg_key* k, char* buf, size_t n);
const char* cfg_type_name(key_type t);

#endif
