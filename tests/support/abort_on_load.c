/* A shared library that kills the process the moment it is loaded: its ELF
 * constructor calls abort(). Detection tests put it where NIXL would be
 * installed to prove that finding NIXL never loads it. */
#include <stdlib.h>

__attribute__((constructor)) static void eplb_test_abort_on_load(void) { abort(); }
