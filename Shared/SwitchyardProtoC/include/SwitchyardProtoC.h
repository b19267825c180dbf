#ifndef SWITCHYARD_PROTO_C_H
#define SWITCHYARD_PROTO_C_H
/* Umbrella header for the committed protoc-c output (make proto). */
#endif
