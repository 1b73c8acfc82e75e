// minigrad: the one exception type, and the checks that build its messages.
#pragma once
#include <cstdint>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace minigrad {

// Every error minigrad raises. The message names the op, the shapes/dtypes/devices involved and
// what was expected, e.g. "add: shapes [2, 3] and [4] are not broadcastable".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
inline std::ostream& operator<<(std::ostream& os, const std::vector<int64_t>& v) {
  os << '[';
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  return os << ']';
}
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_error(const std::string& msg);
}  // namespace detail

}  // namespace minigrad

// MG_CHECK(cond, "op: ", parts...) throws minigrad::Error with the parts streamed together.
#define MG_CHECK(cond, ...)                                                          \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      using ::minigrad::detail::operator<<;                                          \
      ::minigrad::detail::throw_error(::minigrad::detail::str_cat(__VA_ARGS__));     \
    }                                                                                \
  } while (0)

#define MG_FAIL(...) MG_CHECK(false, __VA_ARGS__)
