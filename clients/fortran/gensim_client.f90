! gensim Fortran binding: the C client (clients/c/gensim_client.h) through ISO_C_BINDING.
!
!     use gensim_client
!     character(kind=c_char, len=2), target :: name = "u" // c_null_char
!     type(gensim_field) :: fields(1)
!     type(c_ptr) :: client, data(1)
!     fields(1) = gensim_field(c_loc(name), GENSIM_FLOAT32, 2, &
!                              [int(ny, c_int32_t), int(nx, c_int32_t), 0_c_int32_t, 0_c_int32_t])  ! C order
!     client = gensim_open_env(1, fields)            ! GENSIM_ADDRESS, _TOKEN, _SIM_ID
!     if (.not. c_associated(client)) stop gensim_last_error()
!     data(1) = c_loc(u)                             ! u(nx, ny), real(c_float), target
!     if (gensim_send(client, step, t, data) /= 0) print *, gensim_error(client)
!     status = gensim_end(client); call gensim_close(client)
!
! Shapes are C shapes: a Fortran array u(nx, ny) is column-major, so its C shape is (ny, nx);
! declare that (and the same in the study's simulation.fields), or transpose before sending.
! Field names are NUL-terminated; they are copied by gensim_open_env.
module gensim_client
  use, intrinsic :: iso_c_binding
  implicit none
  private
  public :: gensim_field, gensim_open_env, gensim_send, gensim_end, gensim_close, gensim_error, &
            gensim_last_error, GENSIM_FLOAT32, GENSIM_FLOAT64

  integer(c_int), parameter :: GENSIM_FLOAT32 = 1, GENSIM_FLOAT64 = 2

  ! struct gensim_field of gensim_client.h (shape holds uint32 values)
  type, bind(c) :: gensim_field
     type(c_ptr) :: name
     integer(c_int) :: dtype
     integer(c_int) :: ndim
     integer(c_int32_t) :: shape(4)
  end type gensim_field

  interface
     function gensim_open_env(n_fields, fields) bind(c, name="gensim_open_env") result(client)
       import :: c_int, c_ptr, gensim_field
       integer(c_int), value :: n_fields
       type(gensim_field), intent(in) :: fields(*)
       type(c_ptr) :: client
     end function gensim_open_env

     function gensim_send(client, step, t, data) bind(c, name="gensim_send") result(status)
       import :: c_int, c_int32_t, c_double, c_ptr
       type(c_ptr), value :: client
       integer(c_int32_t), value :: step
       real(c_double), value :: t
       type(c_ptr), intent(in) :: data(*)
       integer(c_int) :: status
     end function gensim_send

     function gensim_end(client) bind(c, name="gensim_end") result(status)
       import :: c_int, c_ptr
       type(c_ptr), value :: client
       integer(c_int) :: status
     end function gensim_end

     subroutine gensim_close(client) bind(c, name="gensim_close")
       import :: c_ptr
       type(c_ptr), value :: client
     end subroutine gensim_close

     function c_error(client) bind(c, name="gensim_error") result(message)
       import :: c_ptr
       type(c_ptr), value :: client
       type(c_ptr) :: message
     end function c_error

     function c_last_error() bind(c, name="gensim_last_error") result(message)
       import :: c_ptr
       type(c_ptr) :: message
     end function c_last_error

     function c_strlen(s) bind(c, name="strlen") result(n)
       import :: c_ptr, c_size_t
       type(c_ptr), value :: s
       integer(c_size_t) :: n
     end function c_strlen
  end interface

contains

  ! The last error of `client`.
  function gensim_error(client) result(message)
    type(c_ptr), intent(in) :: client
    character(len=:), allocatable :: message
    message = from_c(c_error(client))
  end function gensim_error

  ! Why the last gensim_open_env returned a null pointer.
  function gensim_last_error() result(message)
    character(len=:), allocatable :: message
    message = from_c(c_last_error())
  end function gensim_last_error

  function from_c(s) result(text)
    type(c_ptr), intent(in) :: s
    character(len=:), allocatable :: text
    character(kind=c_char), pointer :: chars(:)
    integer :: i, n
    n = int(c_strlen(s))
    call c_f_pointer(s, chars, [n])
    allocate(character(len=n) :: text)
    do i = 1, n
       text(i:i) = chars(i)
    end do
  end function from_c
end module gensim_client
