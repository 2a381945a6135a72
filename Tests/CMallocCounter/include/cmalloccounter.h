// Counts heap allocations made by the calling thread while counting is on, so tests
// can show that the request path allocates nothing in the steady state.
#pragma once
#include <stdint.h>
void ferry_malloc_counting_begin(void);
/// Stops counting on this thread and returns how many allocations it saw.
uint64_t ferry_malloc_counting_end(void);
