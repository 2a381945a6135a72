#pragma once
#include <stdint.h>
#include <linux/fuse.h>
