#ifndef SINKHOLE_CZLIB_SHIM_H
#define SINKHOLE_CZLIB_SHIM_H
// zlib, for reading and writing gzip-compressed rotated block logs.
#include <zlib.h>
#endif
