# Checks that the per-ISA kernel objects share no code with each other or the rest of minigrad:
# every symbol they define that the linker may merge (weak: inline functions, template
# instantiations) must live in that level's own namespace (minigrad::cpu::isa_<level>). A weak
# std:: or minigrad:: symbol compiled with AVX-512 flags could otherwise stand in for the baseline
# copy and crash an AVX2 CPU with an illegal instruction.
#   cmake -DNM=<nm> -DOBJECTS="<level>=<obj>;..." -P isa_symbols.cmake
set(bad "")
foreach(entry ${OBJECTS})
  string(REPLACE "=" ";" parts "${entry}")
  list(GET parts 0 level)
  list(GET parts 1 obj)
  execute_process(COMMAND ${NM} -C --defined-only ${obj} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed on ${obj}")
  endif()
  string(REPLACE "\n" ";" lines "${out}")
  set(count 0)
  foreach(line ${lines})
    if(line MATCHES "^[0-9a-f]+ ([A-Za-z]) (.*)$")
      set(kind ${CMAKE_MATCH_1})
      set(name "${CMAKE_MATCH_2}")
      math(EXPR count "${count} + 1")
      # W/V/u: weak or unique symbols, merged across objects by the linker
      # (DW.ref.__gxx_personality_v0 is the C++ runtime's one exception-personality pointer: data)
      if(kind MATCHES "^[WVu]$" AND NOT name MATCHES "isa_${level}::" AND NOT name STREQUAL "DW.ref.__gxx_personality_v0")
        list(APPEND bad "${level}: ${kind} ${name}")
      endif()
      # strong globals other than the level's own and its table accessor
      if(kind MATCHES "^[TDB]$" AND NOT name MATCHES "isa_${level}::" AND NOT name MATCHES "isa_kernels_${level}\\(\\)")
        list(APPEND bad "${level}: ${kind} ${name}")
      endif()
    endif()
  endforeach()
  if(count EQUAL 0)
    message(FATAL_ERROR "no symbols read from ${obj}: the check would pass vacuously")
  endif()
  message(STATUS "${level}: ${count} symbols checked")
endforeach()
if(bad)
  string(REPLACE ";" "\n  " bad_text "${bad}")
  message(FATAL_ERROR "symbols of the per-ISA kernels outside their level's namespace:\n  ${bad_text}")
endif()
