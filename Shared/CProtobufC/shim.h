#ifndef SWITCHYARD_CPROTOBUFC_SHIM_H
#define SWITCHYARD_CPROTOBUFC_SHIM_H
#include <protobuf-c/protobuf-c.h>
#endif
