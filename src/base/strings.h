#pragma once

#include <string_view>

namespace trellis {

// Levenshtein distance (insertions, deletions, substitutions each cost 1): how configuration
// and manifest loaders find the key a user probably meant ("did you mean ...").
size_t editDistance(std::string_view a, std::string_view b);

} // namespace trellis
