#ifndef SINKHOLE_CLDNS_SHIM_H
#define SINKHOLE_CLDNS_SHIM_H
// The only C header sinkhole imports for wire format. Everything that calls
// ldns_* lives in Sources/SinkholeCore/Wire/.
#include <stdbool.h>  // before ldns: makes its `bool` the C99 _Bool that Swift imports as Bool
#include <ldns/ldns.h>
#endif
