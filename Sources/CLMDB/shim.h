#ifndef SNAPBACK_CLMDB_SHIM_H
#define SNAPBACK_CLMDB_SHIM_H
#include <lmdb.h>
#endif
