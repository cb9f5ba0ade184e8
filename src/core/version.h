#ifndef MARKETD_CORE_VERSION_H
#define MARKETD_CORE_VERSION_H
/* The release; `marketd version` and marketd_build_info{version} say it. */
#define MARKETD_VERSION "0.1.0"
#endif
