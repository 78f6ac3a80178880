# proto/no_zmq.cmake - fails when a static library calls libzmq or an
# executable needs libzmq.so: the check that the codec (bf_proto) builds and
# runs without libzmq. Run as a test (proto/CMakeLists.txt,
# tests/fuzz/CMakeLists.txt):
#   cmake -DNM=nm -DREADELF=readelf -DLIB=libbf_proto.a -DEXE=proto_test -P no_zmq.cmake
# LIB and EXE are each optional; NM is needed with LIB, READELF with EXE.
if(DEFINED LIB AND NOT LIB STREQUAL "")
  if(NOT NM)
    message(FATAL_ERROR "no nm to read ${LIB} with")
  endif()
  execute_process(COMMAND ${NM} -u ${LIB} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} -u ${LIB} failed: ${err}")
  endif()
  string(REGEX MATCHALL "[ \t]U[ \t]+zmq_[A-Za-z0-9_]+" calls "${out}")
  if(calls)
    list(REMOVE_DUPLICATES calls)
    message(FATAL_ERROR "${LIB} calls libzmq:${calls}")
  endif()
  message(STATUS "${LIB}: no zmq_ symbol used")
endif()
if(DEFINED EXE AND NOT EXE STREQUAL "")
  if(NOT READELF)
    message(FATAL_ERROR "no readelf to read ${EXE} with")
  endif()
  execute_process(COMMAND ${READELF} -d ${EXE} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${READELF} -d ${EXE} failed: ${err}")
  endif()
  if(out MATCHES "NEEDED[^\n]*libzmq")
    message(FATAL_ERROR "${EXE} needs libzmq at run time:\n${out}")
  endif()
  if(NOT out MATCHES "NEEDED")
    message(FATAL_ERROR "${READELF} -d ${EXE} lists no NEEDED library: cannot tell")
  endif()
  message(STATUS "${EXE}: libzmq not needed")
endif()
