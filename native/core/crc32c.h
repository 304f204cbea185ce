// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of checkpoint files.
// Table-driven, eight bytes per step; no backend, no N-API.
#pragma once
#include <cstddef>
#include <cstdint>

namespace krad {

// Continues a CRC-32C over `n` bytes: crc32c(b, crc32c(a, 0)) is the CRC of a followed by b.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace krad
